"""The executor contract (v2), modelled on TorchX schedulers: render → start → poll → cancel, plus
a stateless ``Control`` (describe / cancel / logs by backend id) that any shell can use.

An executor turns JobSpecs into backend requests and reports what happened to each point as
events; the sweep runner (nrun_core.runner) owns the store, the progress view, retries and the
reading of results, so every backend behaves the same. A new backend is one subpackage with an
Executor (and its Control) plus one ``nrun_core.registry.ExecutorEntry``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from nrun_core.spec import JobSpec

QUEUED, RUNNING, ENDED = "QUEUED", "RUNNING", "ENDED"


@dataclass
class Started:
    """A point is running (or queued at the backend, if ``queued``) under ``backend_id``."""

    idx: int
    backend_id: str
    pid: Optional[int] = None
    pid_start: Optional[str] = None
    time: float = field(default_factory=time.time)
    queued: bool = False


@dataclass
class Ended:
    """A point's process ended. ``reason``: exited | timeout | cancelled | lost."""

    idx: int
    reason: str
    exit_code: Optional[int] = None
    detail: str = ""
    time: float = field(default_factory=time.time)
    # What the backend saw the point use (wall_s, cpu_s, max_rss...), for points that could not
    # report it themselves (killed, OOM); the point's own result file wins.
    usage: Optional[Dict[str, Any]] = None


Event = Union[Started, Ended]


@dataclass(frozen=True)
class Request:
    """One rendered backend request, as a dry run shows it and golden tests pin it."""

    title: str
    text: str


@dataclass
class SweepContext:
    """What the launcher hands every executor besides its options."""

    sweep_id: str
    configs: Mapping[int, Any] = field(default_factory=dict)     # composed config of each point
    run_in_process: Optional[Callable[[JobSpec], int]] = None    # fork mode's point body
    host_dirs: List[str] = field(default_factory=list)  # dirs of the task's files outside the code dir


@dataclass(frozen=True)
class BackendState:
    """What the backend says about one backend id, from any shell."""

    state: str                      # QUEUED | RUNNING | ENDED
    exit_code: Optional[int] = None
    detail: str = ""


class LogSource:
    """A point's log where the CLI can read it: a file here, or on a host through a transport
    (``nrun_core.transport``), read in byte ranges so a huge log never sits in memory."""

    def __init__(self, path: str, transport: Any = None) -> None:
        self.path, self.transport = path, transport

    def read(self, offset: int, size: int) -> bytes:
        if self.transport is not None:
            return self.transport.read(self.path, offset, size)
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return f.read(size)
        except (FileNotFoundError, IsADirectoryError):
            return b""


class Control:
    """A backend seen from any shell, with only the store's record to go on: no live executor,
    no supervisor. ``describe`` says what each backend id is doing (ids it cannot find are
    left out); ``cancel`` stops them; ``logs`` says where a point's output can be read."""

    def __init__(self, sweep: Dict[str, Any]) -> None:
        self.sweep = sweep

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        """Point index → its state at the backend; None where the backend cannot tell."""
        return {p["idx"]: None for p in points}

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        """Stop these points at the backend; returns the indices it stopped."""
        return []

    def logs(self, point: Dict[str, Any], stream: str) -> LogSource:
        return LogSource(point.get(stream) or "")

    def close(self) -> None:
        pass


class Executor(ABC):
    name: str = ""
    # Points run by this very Python (a task function without a reference can go by value).
    same_python: bool = False
    # Points run in forks of the launcher with its own objects (no payload, any task function).
    fork: bool = False
    # Points see the launcher's files at the same paths (not only the code and job dir).
    sees_launcher_files: bool = True
    # Submit in the launcher before detaching (a refused request fails the command itself).
    start_before_detach: bool = False
    # `nrun/launcher=...` options this executor can run (checked at config time, nrun_core.wrappers).
    # ft_launcher takes torchrun's argv and PET_* variables unchanged: wherever torchrun runs, ft does.
    launchers: frozenset = frozenset({"direct", "torchrun", "ft"})
    control_class: type = Control

    def __init__(self, options: Any, ctx: SweepContext) -> None:
        self.opts = options
        self.ctx = ctx

    def header(self) -> str:
        """A line for the sweep's header: what the user should know before waiting (limits...)."""
        return ""

    def check_options(self) -> None:
        """Raise ConfigError for a bad setting; runs before the code is packaged."""

    def choose_mode(self, *, packaged: bool) -> None:
        """Decide how points run once it is known whether the code was packaged (nrun_local:
        fork or command); ConfigError if the asked mode cannot be."""

    def validate(self, specs: Sequence[JobSpec]) -> None:
        """Raise ConfigError for anything the backend cannot do, before anything is submitted."""

    @abstractmethod
    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        """The exact requests ``start`` would send."""

    @abstractmethod
    def start(self, specs: Sequence[JobSpec]) -> None:
        """Submit (or queue) these points; progress arrives through ``poll``."""

    @abstractmethod
    def poll(self, timeout: float) -> List[Event]:
        """Wait at most ``timeout`` seconds for something to happen; return what happened."""

    @abstractmethod
    def cancel(self, indices: Optional[Sequence[int]] = None) -> None:
        """Stop these points (all if None); their Ended(reason='cancelled') come from poll."""

    @abstractmethod
    def busy(self) -> bool:
        """True while any point started here has not been reported Ended."""

    def finish(self) -> None:
        """The sweep is over: nothing live and no retry due. Release what the whole sweep held
        (SkyPilot clusters). Not ``busy() == False``: that also happens while a retry waits."""

    def record(self) -> Dict[str, Any]:
        """What this sweep's Control will need from another shell that the options do not say
        (which API server the points went to), stored with the sweep as its ``info``. Never a
        secret: the store is plain text."""
        return {}

    @classmethod
    def control(cls, sweep: Dict[str, Any]) -> Control:
        return cls.control_class(sweep)
