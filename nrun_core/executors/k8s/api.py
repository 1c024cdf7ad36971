"""The official kubernetes client, made from a kubeconfig, with its errors turned into nrun's.

- 404 raises ``Gone`` (a vanished object is a lost point, never a crash).
- 401/403 and a bad kubeconfig raise ConfigError naming the setting (kubeconfig, context,
  namespace); a 422/400 keeps the apiserver's own message (the field and why), so a user sees
  exactly what the cluster refused.
- Connection failures raise BackendError naming the server and the kubeconfig.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from nrun_core.errors import BackendError, ConfigError


class Gone(BackendError):
    """The apiserver does not know the object (404)."""


@dataclass(frozen=True)
class Kind:
    """One custom resource: where it lives in the API and what the user calls it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd(self) -> str:
        return f"{self.plural}.{self.group}"


def kubeconfig_path(setting: Optional[str]) -> Optional[str]:
    """hydra.launcher.kubeconfig, else $KUBECONFIG, else ~/.kube/config (None: none exists)."""
    path = setting or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    return os.path.expanduser(path.split(os.pathsep)[0]) if path else None


_cache_pid: Optional[int] = None


def _own_temp_files() -> None:
    """The client writes a kubeconfig's inline certificates to temp files, cached by content and
    deleted at exit. A forked process (the detached supervisor) inherits that cache, but the
    files belong to its parent, whose exit deletes them: start the fork with an empty cache."""
    global _cache_pid
    if _cache_pid != os.getpid():
        from kubernetes.config import kube_config

        cache = getattr(kube_config, "_temp_files", None)
        if isinstance(cache, dict) and _cache_pid is not None:
            cache.clear()
        _cache_pid = os.getpid()


class Kube:
    def __init__(self, kubeconfig: Optional[str], context: Optional[str], timeout: float = 30.0) -> None:
        from kubernetes import client, config

        _own_temp_files()
        path = kubeconfig_path(kubeconfig)
        try:
            if path and os.path.isfile(path):
                api = config.new_client_from_config(config_file=path, context=context or None)
            elif not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
                api = client.ApiClient()
            else:
                raise ConfigError(
                    f"no kubeconfig at {path} (hydra.launcher.kubeconfig={kubeconfig}, "
                    f"$KUBECONFIG={os.environ.get('KUBECONFIG')}). Fix: set hydra.launcher.kubeconfig "
                    "or KUBECONFIG to your cluster's kubeconfig file")
        except config.ConfigException as exc:
            raise ConfigError(f"cannot use the kubeconfig {path} (hydra.launcher.context={context}): "
                              f"{exc}. Fix: check hydra.launcher.kubeconfig and hydra.launcher.context "
                              "(`kubectl config get-contexts` lists the contexts)") from None
        self.path, self.context, self.timeout = path, context, timeout
        self.server = api.configuration.host
        self.client = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    # -- error mapping -----------------------------------------------------------------------
    def call(self, fn: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            msg = _message(exc)
            if exc.status == 404:
                raise Gone(f"{what}: not found (404): {msg}") from None
            if exc.status in (401, 403):
                raise ConfigError(
                    f"the Kubernetes API at {self.server} refused to {what} ({exc.status}): {msg}. Fix: use "
                    f"credentials allowed to do this (hydra.launcher.kubeconfig={self.path}, "
                    f"hydra.launcher.context={self.context}, hydra.launcher.namespace)") from None
            raise BackendError(f"the Kubernetes API at {self.server} refused to {what} "
                               f"({exc.status} {exc.reason}): {msg}") from None
        except (HTTPError, OSError) as exc:
            raise BackendError(f"could not reach the Kubernetes API at {self.server} to {what} "
                               f"({type(exc).__name__}: {exc}). Fix: check the cluster is up and "
                               f"hydra.launcher.kubeconfig={self.path}") from None

    # -- custom objects ----------------------------------------------------------------------
    def create(self, kind: Kind, namespace: str, body: Dict[str, Any]) -> Dict[str, Any]:
        name = body["metadata"]["name"]
        return self.call(self.custom.create_namespaced_custom_object, f"create {kind.kind} {namespace}/{name}",
                         kind.group, kind.version, namespace, kind.plural, body)

    def get(self, kind: Kind, namespace: str, name: str) -> Dict[str, Any]:
        return self.call(self.custom.get_namespaced_custom_object, f"read {kind.kind} {namespace}/{name}",
                         kind.group, kind.version, namespace, kind.plural, name)

    def list(self, kind: Kind, namespace: str, selector: str = "", limit: Optional[int] = None) -> List[Dict[str, Any]]:
        kwargs: Dict[str, Any] = {"label_selector": selector}
        if limit:
            kwargs["limit"] = limit
        out = self.call(self.custom.list_namespaced_custom_object, f"list {kind.plural} in namespace {namespace}",
                        kind.group, kind.version, namespace, kind.plural, **kwargs)
        return list(out.get("items") or [])

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        """Delete the object and what it owns (background propagation); already gone is fine."""
        try:
            self.call(self.custom.delete_namespaced_custom_object, f"delete {kind.kind} {namespace}/{name}",
                      kind.group, kind.version, namespace, kind.plural, name,
                      propagation_policy="Background")
        except Gone:
            pass

    # -- secrets -----------------------------------------------------------------------------
    def create_secret(self, namespace: str, name: str, values: Dict[str, str], labels: Dict[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": namespace, "labels": labels}, "stringData": values}
        self.call(self.core.create_namespaced_secret, f"create secret {namespace}/{name}", namespace, body)

    def delete_secret(self, namespace: str, name: str) -> None:
        try:
            self.call(self.core.delete_namespaced_secret, f"delete secret {namespace}/{name}", name, namespace)
        except Gone:
            pass

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


def _message(exc: Any) -> str:
    """The apiserver's own words from an ApiException (its Status.message), one line."""
    import json

    body = getattr(exc, "body", None) or ""
    try:
        text = json.loads(body).get("message") or body
    except (ValueError, AttributeError):
        text = body or str(exc)
    return " ".join(str(text).split())[:2000]
