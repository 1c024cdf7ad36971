"""One custom object per point on a Kubernetes cluster, followed by polling (``cloudjob.polled``).

Subclasses give the resource (``resource``: its kind, manifest, status mapping and own option
checks); this class owns the rest: options checked before packaging; before anything is created,
one list call proves the kubeconfig, the namespace, RBAC and the CRD (a missing CRD names the
operator to install); the code and runtime staged on the volume; ``secret_env`` values in one
Secret per sweep (deleted when the sweep has nothing live); cancel and timeout delete the object
(TERM and KILL alike: Kubernetes gives the pods their grace period); finished objects are deleted
once read. Logs and results are the point's files on the volume.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

import yaml

from nrun_core.errors import ConfigError
from nrun_core.executors.base import Request
from nrun_core.executors.cloudjob.polled import GONE, PolledJobExecutor, RemoteState
from nrun_core.executors.cloudjob.secrets import SweepSecrets, refuse_both
from nrun_core.executors.k8s import manifest as mf
from nrun_core.executors.k8s.api import Kind, kubeconfig_path
from nrun_core.executors.k8s.resource import Resource
from nrun_core.executors.queue import Slot
from nrun_core.spec import JobSpec


class K8sJobExecutor(PolledJobExecutor):
    resource: Resource

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self.api: Any = None
        self._checked: Any = (None, None)
        self._secrets = SweepSecrets()

    # -- what the resource provides --------------------------------------------------------
    @property
    def kind(self) -> Kind:
        return self.resource.kind

    @property
    def option(self) -> str:
        return self.resource.option

    def manifest(self, spec: JobSpec, attempt: int = 1) -> Dict[str, Any]:
        return self.resource.manifest(self.opts, spec, attempt)

    def state_of(self, obj: Dict[str, Any]) -> RemoteState:
        return self.resource.state_of(obj)

    # -- Executor --------------------------------------------------------------------------
    @property
    def namespace(self) -> str:
        return str(self.opts.namespace)

    def check_options(self) -> None:
        mf.check_options(self.opts, self.option)
        self.resource.check_options(self.opts)

    def validate(self, specs: Sequence[JobSpec]) -> None:
        storage = mf.storage_of(self.opts, self.option)
        for s in specs:
            storage.check_job_dir(s)
            refuse_both(s, self.opts.secret_refs)
        if self.opts.dry_run:
            return
        api = self._client()
        from nrun_core.executors.k8s.api import Gone

        try:
            api.list(self.kind, self.namespace, limit=1)
        except Gone:
            raise ConfigError(
                f"the cluster at {api.server} has no {self.kind.kind} resource ({self.kind.crd}, "
                f"{self.kind.api_version}): {self.resource.operator} is not installed there. Fix: install it, or pick "
                "the cluster with hydra.launcher.kubeconfig / hydra.launcher.context") from None
        try:
            api.call(api.core.read_namespace, f"read namespace {self.namespace}", self.namespace)
        except Gone:
            raise ConfigError(f"hydra.launcher.namespace={self.namespace}: no such namespace on the cluster at "
                              f"{api.server}. Fix: create it (`kubectl create namespace {self.namespace}`) or "
                              "pick another") from None
        except ConfigError:
            pass  # not allowed to read namespaces: creating the objects will tell
        self._checked = (os.getpid(), api)  # the same client runs the points in this process

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        server = _server_of(self.opts)
        out = []
        for s in specs:
            body = self.manifest(s)
            path = f"/apis/{self.kind.api_version}/namespaces/{self.namespace}/{self.kind.plural}"
            text = f"# POST {server}{path}\n" + yaml.dump(body, Dumper=_Dumper, sort_keys=False, width=100)
            out.append(Request(title=f"point {s.index}: {self.kind.kind} {self.namespace}/{body['metadata']['name']}",
                               text=text))
        return out

    # -- PolledJobExecutor -----------------------------------------------------------------
    def _client(self) -> Any:
        from nrun_core.executors.k8s.api import Kube

        return Kube(self.opts.kubeconfig, self.opts.context, float(self.opts.request_timeout_s))

    def open_backend(self) -> None:
        pid, api = self._checked
        self.api = api if pid == os.getpid() else self._client()

    def submit(self, slot: Slot) -> str:
        spec = slot.spec
        mf.storage_of(self.opts, self.option).stage(spec)
        self._make_secret(spec)
        body = self.manifest(spec, slot.attempt)
        self.api.create(self.kind, self.namespace, body)
        return f"{self.namespace}/{body['metadata']['name']}"

    def remote_state(self, job_id: str) -> RemoteState:
        from nrun_core.executors.k8s.api import Gone
        from nrun_core.executors.k8s.control import split_id

        ref = split_id(job_id)
        assert ref is not None
        try:
            return self.state_of(self.api.get(self.kind, *ref))
        except Gone:
            return RemoteState(GONE)

    def stop(self, job_id: str) -> None:
        self.remove(job_id)

    def remove(self, job_id: str) -> None:
        from nrun_core.executors.k8s.control import split_id

        ref = split_id(job_id)
        assert ref is not None
        self.api.delete(self.kind, *ref)

    def idle(self) -> None:
        """The sweep has nothing live: its Secret leaves the namespace."""
        self._secrets.remove(lambda name: self.api.delete_secret(self.namespace, name))

    def _make_secret(self, spec: JobSpec) -> None:
        def make(values: Dict[str, str]) -> List[str]:
            name = mf.secret_name(spec.sweep_id)
            self.api.delete_secret(self.namespace, name)  # a leftover of a crashed launcher
            self.api.create_secret(self.namespace, name, values, {mf.SWEEP_LABEL: spec.sweep_id,
                                                                  "app.kubernetes.io/managed-by": "nrun"})
            return [name]

        self._secrets.ensure(spec, make)


class _Dumper(yaml.SafeDumper):
    """YAML as a person reads it: multi-line strings (runtimeEnvYAML) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _server_of(opts: Any) -> str:
    """The API server the kubeconfig names (read without the client: a dry run needs no cluster)."""
    path = kubeconfig_path(opts.kubeconfig)
    try:
        with open(path or "") as fh:
            conf = yaml.safe_load(fh) or {}
        context = opts.context or conf.get("current-context")
        ctx = next(c["context"] for c in conf.get("contexts") or [] if c.get("name") == context)
        return next(c["cluster"]["server"] for c in conf.get("clusters") or [] if c.get("name") == ctx.get("cluster"))
    except (OSError, StopIteration, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return "<the kubeconfig's server>"
