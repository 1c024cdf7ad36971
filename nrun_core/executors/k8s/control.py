"""A Kubernetes executor seen from any shell (`nrun status`, `nrun cancel`, `nrun logs`): a point's
backend id is ``<namespace>/<name>`` of its object; the kubeconfig and context come from the
sweep's stored options (or this shell's KUBECONFIG). Logs are the point's files on the volume,
where the default ``Control.logs`` reads them. The loops are cloudjob's ``JobControl``; cancel
deletes the object (its pods go with it), Kubernetes has no separate stop."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from nrun_core.executors.cloudjob.control import JobControl
from nrun_core.executors.k8s.resource import Resource


def split_id(backend_id: str) -> Optional[Tuple[str, str]]:
    namespace, _, name = (backend_id or "").partition("/")
    return (namespace, name) if namespace and name else None


def client_for(conf: Dict[str, Any]) -> Any:
    from nrun_core.executors.k8s.api import Kube

    return Kube(conf.get("kubeconfig"), conf.get("context"), float(conf.get("request_timeout_s") or 30.0))


class K8sControl(JobControl):
    """Subclasses name their custom resource (``resource``)."""

    resource: Resource
    stop_method = None

    @property
    def noun(self) -> str:  # type: ignore[override]
        return self.resource.kind.kind

    def make_client(self) -> Any:
        return client_for(dict(self.sweep.get("conf") or {}))

    def ref(self, backend_id: str) -> Any:
        ns_name = split_id(backend_id)
        return None if ns_name is None else (self.resource.kind, *ns_name)

    def state_of(self, obj: Any) -> Any:
        return self.resource.state_of(obj)

    def gone_error(self) -> type:
        from nrun_core.executors.k8s.api import Gone

        return Gone
