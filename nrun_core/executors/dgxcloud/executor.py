r"""nrun_dgxcloud: each point as one Run:ai workload on DGX Cloud, over Run:ai's REST API (httpx).

    python train.py -m hydra/launcher=nrun_dgxcloud hydra.launcher.project=my-project \
        hydra.launcher.image=nvcr.io/nvidia/pytorch:24.05-py3 hydra.launcher.pvc=my-pvc \
        hydra.launcher.storage_dir=/mnt/pvc hydra.sweep.dir=/mnt/pvc/multirun lr=0.1,0.01

Decisions:
- One node: a training workload; ``nodes > 1``: a distributed PyTorch workload, one replica
  per node; each maps the PyTorchJob's RANK and MASTER_ADDR/PORT to the launcher's rank and
  rendezvous address in the container (``cloudjob.command``). Code, logs and results travel
  only through the PVC (``cloudjob.storage``): the code snapshot and the point runtime are
  copied there once; nothing is downloaded at run time.
- Token cached until it nearly expires, renewed on a 401 (``api``); the client secret comes
  from the environment only. Retries only on 429/502/503/504 and connection errors.
- Before anything is submitted: the token (a wrong secret fails the command, naming the
  variable) and the project lookup. ``secret_env`` is refused (a value would sit in the
  workload spec); ``secret_refs`` names Kubernetes secrets instead.
- Status: one GET per workload when due (backoff, ``cloudjob.polled``); cancel = the documented
  ``POST .../suspend``, then DELETE after the grace; finished workloads are deleted once read.
  A 404 marks the point lost.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Sequence

from nrun_core.executors.base import Request
from nrun_core.executors.cloudjob.polled import GONE, PolledJobExecutor, RemoteState
from nrun_core.executors.dgxcloud import spec as ds
from nrun_core.executors.dgxcloud.control import DgxCloudControl, split_id, state_of
from nrun_core.executors.queue import Slot
from nrun_core.spec import JobSpec


class DgxCloudExecutor(PolledJobExecutor):
    name = "dgxcloud"
    control_class = DgxCloudControl

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self.api: Any = None
        self._checked: Any = (None, None)

    def check_options(self) -> None:
        ds.check_options(self.opts)

    def validate(self, specs: Sequence[JobSpec]) -> None:
        storage = ds.storage_of(self.opts)
        for s in specs:
            storage.check_job_dir(s)
        if self.opts.dry_run:
            return
        from nrun_core.executors.dgxcloud.api import RunAI

        api = RunAI(self.opts, ds.base_url(self.opts))
        api.project(str(self.opts.project))
        self._checked = (os.getpid(), api)  # the same client runs the points in this process

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        url = ds.base_url(self.opts)
        out = []
        for s in specs:
            kind = ds.kind_of(s)
            body = ds.body(self.opts, s, "<projectId of " + str(self.opts.project) + ">",
                           "<clusterId of " + str(self.opts.project) + ">")
            text = (f"# POST {url}/token  {{\"grantType\": \"client_credentials\", \"clientId\": "
                    f"\"{self.opts.client_id or '$RUNAI_CLIENT_ID'}\", \"clientSecret\": \"****\"}} (once, cached)\n"
                    f"# POST {url}/workloads/{kind}  (Authorization: Bearer ****)\n"
                    + json.dumps(body, indent=2, sort_keys=True) + "\n")
            out.append(Request(title=f"point {s.index}: Run:ai {kind} workload {body['name']}", text=text))
        return out

    # -- PolledJobExecutor -------------------------------------------------------------------
    def open_backend(self) -> None:
        from nrun_core.executors.dgxcloud.api import RunAI

        pid, api = self._checked
        self.api = api if pid == os.getpid() else RunAI(self.opts, ds.base_url(self.opts))

    def submit(self, slot: Slot) -> str:
        spec = slot.spec
        ds.storage_of(self.opts).stage(spec)
        pid, cid = self.api.project(str(self.opts.project))
        kind = ds.kind_of(spec)
        return f"{kind}/{self.api.create(kind, ds.body(self.opts, spec, pid, cid, slot.attempt))}"

    def remote_state(self, job_id: str) -> RemoteState:
        from nrun_core.executors.dgxcloud.api import Gone

        ref = split_id(job_id)
        assert ref is not None
        try:
            return state_of(self.api.get(*ref))
        except Gone:
            return RemoteState(GONE)

    def stop(self, job_id: str) -> None:
        self.api.suspend(*split_id(job_id))  # type: ignore[misc]

    def remove(self, job_id: str) -> None:
        self.api.delete(*split_id(job_id))  # type: ignore[misc]


__all__ = ["DgxCloudExecutor"]
