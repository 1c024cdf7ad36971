"""A sweep's ``secret_env`` values held at the backend (Kubernetes Secret, Lepton workspace
secrets): made once, by the first point that needs them, under a lock (points are submitted from
a thread pool), and removed when the sweep has nothing live. Each executor says how its backend
makes and deletes them; the bookkeeping lives here once."""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, Mapping, Optional

from nrun_core.errors import ConfigError
from nrun_core.placement import secret_values
from nrun_core.spec import JobSpec


def refuse_both(spec: JobSpec, secret_refs: Optional[Mapping[str, str]]) -> None:
    """A variable may come from this shell (secret_env) or from a backend secret (secret_refs),
    not both: which would win is the backend's choice, so refuse before anything is submitted."""
    for name in spec.secret_env:
        if name in (secret_refs or {}):
            raise ConfigError(f"{name} is in both hydra.launcher.secret_env and secret_refs; keep one")


class SweepSecrets:
    def __init__(self) -> None:
        self._made: Optional[List[str]] = None  # names made at the backend; None: not yet made
        self._lock = threading.Lock()

    def ensure(self, spec: JobSpec, make: Callable[[Dict[str, str]], List[str]]) -> None:
        """Before the point is created: if its secret_env values are not at the backend yet,
        ``make(values)`` puts them there and returns the names it made."""
        with self._lock:
            if self._made is not None or not spec.secret_env:
                return
            self._made = list(make(secret_values(spec.secret_env)))

    def remove(self, delete: Callable[[str], None]) -> None:
        """The sweep has nothing live: ``delete(name)`` each one made (errors are ignored: a
        secret already gone is gone); a later point makes them again."""
        with self._lock:
            made, self._made = self._made or [], None
        for name in made:
            try:
                delete(name)
            except Exception:
                pass
