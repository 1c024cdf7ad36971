"""`hydra/launcher=nice_spawn`: each point its own process session, under `nice -n NICENESS`.

An example of an executor shipped outside nrun: a schema, an executor on nrun's shared
launcher-side queue, and a registry entry named by the ``nrun.executors`` entry point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Sequence

from nrun_core import placement, procs
from nrun_core.conf import NrunConf
from nrun_core.errors import ConfigError
from nrun_core.executors.base import Ended, Event, Request, Started
from nrun_core.executors.local.executor import LocalControl
from nrun_core.executors.queue import QueuedExecutor, Slot
from nrun_core.registry import ExecutorEntry
from nrun_core.shell import join
from nrun_core.spec import JobSpec


@dataclass
class NiceSpawnConf(NrunConf):
    """`hydra/launcher=nice_spawn`: points as niced process sessions on this machine."""

    # Niceness of every point's process (0-19; higher is kinder to the rest of the machine).
    niceness: int = 10


class NiceSpawnExecutor(QueuedExecutor):
    name = "nice_spawn"
    same_python = True
    control_class = LocalControl   # a pid and its start time identify a point from any shell

    def check_options(self) -> None:
        if not 0 <= self.opts.niceness <= 19:
            raise ConfigError(f"hydra.launcher.niceness={self.opts.niceness}: choose 0 to 19")

    def _argv(self, spec: JobSpec) -> List[str]:
        return ["nice", "-n", str(self.opts.niceness), *placement.local(spec, sys.executable).argv(spec)]

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        return [Request(f"point {s.index}", f"cwd: {placement.local(s, sys.executable).workdir(s)}\n"
                                            f"command: {join(self._argv(s))}\n") for s in specs]

    def launch(self, slot: Slot) -> List[Event]:
        spec = slot.spec
        where = placement.local(spec, sys.executable)
        env = {**os.environ, **where.env(spec, token=slot.token), **placement.secret_values(spec.secret_env)}
        os.makedirs(spec.nrun_dir, exist_ok=True)
        with open(spec.stdout, "ab") as out, open(spec.stderr, "ab") as err:
            proc = subprocess.Popen(self._argv(spec), cwd=where.workdir(spec), env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
        slot.handle = proc
        return [Started(idx=spec.index, backend_id=str(proc.pid), pid=proc.pid, pid_start=procs.start_time(proc.pid))]

    def signal(self, slot: Slot, kill: bool) -> None:
        try:
            os.killpg(slot.handle.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass
        if kill:
            procs.kill_tagged(slot.token)

    def wait(self, timeout: float) -> List[Event]:
        deadline = time.monotonic() + timeout
        while True:
            events: List[Event] = []
            for slot in list(self._live.values()):
                code = slot.handle.poll() if slot.handle is not None else None
                if code is not None:
                    procs.kill_tagged(slot.token)
                    events.append(Ended(idx=slot.spec.index, reason="exited", exit_code=code,
                                        detail=procs.describe_exit(code)))
            if events or time.monotonic() >= deadline:
                return events
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


EXECUTOR = ExecutorEntry(option="nice_spawn", schema="nrun_example_executor:NiceSpawnConf",
                         executor="nrun_example_executor:NiceSpawnExecutor")

__all__ = ["EXECUTOR", "NiceSpawnConf", "NiceSpawnExecutor"]
