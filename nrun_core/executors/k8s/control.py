"""A Kubernetes executor seen from any shell (`nrun status`, `nrun cancel`, `nrun logs`): a point's
backend id is ``<namespace>/<name>`` of its object; the kubeconfig and context come from the
sweep's stored options (or this shell's KUBECONFIG). Logs are the point's files on the volume,
where the default ``Control.logs`` reads them."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from nrun_core.errors import NrunError
from nrun_core.executors.base import ENDED, BackendState, Control
from nrun_core.executors.k8s.api import Kind


def split_id(backend_id: str) -> Optional[Tuple[str, str]]:
    namespace, _, name = (backend_id or "").partition("/")
    return (namespace, name) if namespace and name else None


def client_for(conf: Dict[str, Any]) -> Any:
    from nrun_core.executors.k8s.api import Kube

    return Kube(conf.get("kubeconfig"), conf.get("context"), float(conf.get("request_timeout_s") or 30.0))


class K8sControl(Control):
    """Subclasses name their custom resource (``kind``) and how its status reads (``state_of``)."""

    kind: Kind
    state_of: Callable[[Dict[str, Any]], Any]

    def __init__(self, sweep: Dict[str, Any]) -> None:
        super().__init__(sweep)
        self._api: Any = None

    def _client(self) -> Any:
        if self._api is None:
            self._api = client_for(dict(self.sweep.get("conf") or {}))
        return self._api

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        from nrun_core.executors.k8s.api import Gone

        out: Dict[int, Optional[BackendState]] = {}
        for p in points:
            ref = split_id(p.get("backend_id") or "")
            if ref is None:
                out[p["idx"]] = None
                continue
            try:
                st = type(self).state_of(self._client().get(self.kind, *ref))
                out[p["idx"]] = BackendState(st.phase, exit_code=st.exit_code, detail=st.detail)
            except Gone:
                out[p["idx"]] = BackendState(ENDED, detail=f"{self.kind.kind} {ref[0]}/{ref[1]} is gone (404)")
            except NrunError:
                out[p["idx"]] = None
        return out

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        """Delete each point's object (its pods go with it)."""
        stopped = []
        for p in points:
            ref = split_id(p.get("backend_id") or "")
            if ref is None:
                continue
            try:
                self._client().delete(self.kind, *ref)
                stopped.append(p["idx"])
            except NrunError:
                continue
        return stopped

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
