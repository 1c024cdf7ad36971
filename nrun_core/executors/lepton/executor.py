r"""nrun_lepton: each point as one DGX Cloud Lepton job (one replica per node, with intra-job
communication when there are several), through the leptonai v2 SDK (imported only when this
executor runs).

    python train.py -m hydra/launcher=nrun_lepton hydra.launcher.image=nvcr.io/nvidia/pytorch:24.05-py3 \
        hydra.launcher.resource_shape=gpu.8xh100-80gb hydra.launcher.storage=node-nfs:lepton-shared-fs \
        hydra.launcher.storage_dir=/mnt/lepton-fs hydra.sweep.dir=/mnt/lepton-fs/multirun lr=0.1,0.01

Decisions:
- Code, logs and results go through the shared storage only (``cloudjob.storage``): the code
  snapshot and the point runtime are copied there once; the job mounts the storage and writes
  its logs and result into the job dir on it. Nothing is downloaded at run time.
- The workspace token comes from the environment variable ``token_env`` names (default
  LEPTON_WORKSPACE_TOKEN) and never reaches the store, a file or the dry run. ``secret_env``
  values become Lepton workspace secrets (``nrun-<sweep>-<var>``) that the job references by
  name; they are deleted when the sweep is done. ``secret_refs`` references existing ones.
- A bad token fails the command before anything is submitted (one authenticated list call),
  naming the variable. A job Lepton no longer knows (404) is a lost point.
- Several nodes: each replica maps Lepton's LEPTON_JOB_WORKER_INDEX and replica 0's service
  name to the launcher's rank and rendezvous address in the container (``cloudjob.command``).
- Status: one GET per job when its poll is due (backoff, ``cloudjob.polled``); cancel = PATCH
  spec.stopped, then DELETE after the grace; finished jobs are deleted once read.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence

from nrun_core.executors.base import Request
from nrun_core.executors.cloudjob.polled import ENDED, GONE, QUEUED, RUNNING, PolledJobExecutor, RemoteState
from nrun_core.executors.cloudjob.secrets import SweepSecrets, refuse_both
from nrun_core.executors.lepton import spec as ls
from nrun_core.executors.lepton.control import LeptonControl, state_of
from nrun_core.executors.queue import Slot
from nrun_core.spec import JobSpec


class LeptonExecutor(PolledJobExecutor):
    name = "lepton"
    control_class = LeptonControl

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self.api: Any = None
        self._checked: Any = (None, None)
        self._secrets = SweepSecrets()

    # -- contract ----------------------------------------------------------------------------
    def check_options(self) -> None:
        ls.check_options(self.opts)

    def validate(self, specs: Sequence[JobSpec]) -> None:
        storage = ls.storage_of(self.opts)
        for s in specs:
            storage.check_job_dir(s)
            refuse_both(s, self.opts.secret_refs)
        if self.opts.dry_run:
            return
        from nrun_core.executors.lepton.api import Lepton

        api = Lepton(self.opts)
        api.check_auth()
        self._checked = (os.getpid(), api)  # the same client runs the points in this process

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        url = ls.masked_url(self.opts)
        out = []
        for s in specs:
            body = normalized(ls.body(self.opts, s))
            text = (f"# POST {url}/jobs  (Authorization: Bearer ****, from ${self.opts.token_env})\n"
                    + json.dumps(body, indent=2, sort_keys=True) + "\n")
            out.append(Request(title=f"point {s.index}: Lepton job {body['metadata']['id']}", text=text))
        return out

    # -- PolledJobExecutor -------------------------------------------------------------------
    def open_backend(self) -> None:
        from nrun_core.executors.lepton.api import Lepton

        pid, api = self._checked
        self.api = api if pid == os.getpid() else Lepton(self.opts)

    def submit(self, slot: Slot) -> str:
        spec = slot.spec
        ls.storage_of(self.opts).stage(spec)
        self._make_secrets(spec)
        return self.api.create(ls.body(self.opts, spec, slot.attempt))

    def remote_state(self, job_id: str) -> RemoteState:
        from nrun_core.executors.lepton.api import Gone

        try:
            job = self.api.get(job_id)
        except Gone:
            return RemoteState(GONE)
        return state_of(job)

    def stop(self, job_id: str) -> None:
        self.api.stop(job_id)

    def remove(self, job_id: str) -> None:
        self.api.delete(job_id)

    def failure_tail(self, job_id: str) -> str:
        return self.api.log_tail(job_id)

    def idle(self) -> None:
        """The sweep has nothing live: its secrets leave the workspace."""
        self._secrets.remove(lambda name: self.api.delete_secret(name))

    def _make_secrets(self, spec: JobSpec) -> None:
        def make(values: Dict[str, str]) -> List[str]:
            made = []
            for var in spec.secret_env:
                if var in values:
                    name = ls.secret_name(spec.sweep_id, var)
                    self.api.create_secret(name, values[var])
                    made.append(name)
            return made

        self._secrets.ensure(spec, make)


def normalized(body: Any) -> Any:
    """The body exactly as the SDK sends it (its model's defaults filled in, Nones dropped)."""
    try:
        from leptonai.api.v2.types.job import LeptonJob
    except ImportError:
        return body
    return LeptonJob(**body).dict(exclude_none=True, by_alias=True)


__all__ = ["LeptonExecutor", "ENDED", "QUEUED", "RUNNING"]
