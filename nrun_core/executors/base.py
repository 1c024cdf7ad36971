"""The executor contract, modelled on TorchX schedulers: render (dry run) → start → poll → cancel.

An executor turns JobSpecs into backend requests and reports what happened to each point as
events; the sweep runner (nrun_core.runner) owns the store, the progress view, retries and the
reading of results, so every backend behaves the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from nrun_core.spec import JobSpec


@dataclass
class Started:
    """A point is running (or queued at the backend) under ``backend_id``."""

    idx: int
    backend_id: str
    pid: Optional[int] = None
    pid_start: Optional[str] = None
    time: float = field(default_factory=time.time)


@dataclass
class Ended:
    """A point's process ended. ``reason``: exited | timeout | cancelled | lost."""

    idx: int
    reason: str
    exit_code: Optional[int] = None
    detail: str = ""
    time: float = field(default_factory=time.time)


Event = Union[Started, Ended]


def split_queue(queue: Sequence[JobSpec], wanted: Optional[set]) -> tuple:
    """(specs kept in the queue, indices cancelled) for a cancel of ``wanted`` (None = all)."""
    kept, cancelled = [], []
    for spec in queue:
        (cancelled.append(spec.index) if wanted is None or spec.index in wanted else kept.append(spec))
    return kept, cancelled


@dataclass(frozen=True)
class Request:
    """One rendered backend request, as a dry run shows it and golden tests pin it."""

    title: str
    text: str


class Executor(ABC):
    name: str = ""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.conf = conf

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

    # -- from another shell, with only the store to go on ---------------------------------
    @classmethod
    def cancel_recorded(cls, sweep: Dict[str, Any], points: List[Dict[str, Any]]) -> List[int]:
        """Stop the recorded points directly (nobody supervises them); returns those stopped."""
        return []

    @classmethod
    def probe_recorded(cls, sweep: Dict[str, Any], point: Dict[str, Any]) -> Optional[bool]:
        """Is this recorded point still running at the backend? None if it cannot tell."""
        return None
