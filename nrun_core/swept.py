"""What tells the points of a sweep apart: the swept overrides, not the ones they all share.

Every point's override list repeats what the whole sweep has in common (nrun's own groups such
as ``nrun/packager=git``, a fixed ``epochs=3``); a progress line or a log prefix that repeats
them is noise. A key is *swept* when the user swept it (a sweep override on the command line,
a key of ``hydra.sweeper.params``: an Optuna search is one point per batch, so nothing differs
inside a batch) or when its value is not the same in every point seen so far.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Sequence

OWN_GROUPS = ("nrun/", "hydra/launcher", "hydra.launcher.")  # nrun's own: never a label


def key(word: str) -> str:
    """The key of an override word: ``+a.b=1`` → ``a.b``, ``~x`` → ``x``, ``db@pkg=m`` → ``db@pkg``."""
    return word.split("=", 1)[0].lstrip("+~")


class Swept:
    """The swept keys of a sweep, learnt point by point (one pass, O(overrides) a point)."""

    def __init__(self, declared: Iterable[str] = ()) -> None:
        self.declared = {k for k in declared if not _own(k)}
        self._first: Dict[str, str] = {}     # key → its value in the first point that had it
        self._seen: Dict[str, int] = {}      # key → points that had it
        self._varying: set = set()
        self.points = 0

    def add(self, overrides: Sequence[str]) -> None:
        self.points += 1
        for word in overrides:
            k = key(word)
            self._seen[k] = self._seen.get(k, 0) + 1
            first = self._first.setdefault(k, word)
            if first != word:
                self._varying.add(k)

    def keys(self) -> List[str]:
        """Swept keys, in the order they first appeared (declared ones first when never seen)."""
        order = [k for k in self._first if self.is_swept(k)]
        return order + sorted(k for k in self.declared if k not in self._first)

    def is_swept(self, k: str) -> bool:
        if _own(k):
            return False
        return k in self.declared or k in self._varying or self._seen.get(k, 0) < self.points

    def values(self, overrides: Sequence[str]) -> Dict[str, str]:
        """The point's swept keys and their values, e.g. ``{"lr": "0.1"}`` (a table's columns)."""
        out = {}
        for w in overrides:
            k = key(w)
            if self.is_swept(k):
                out[k] = w.split("=", 1)[1] if "=" in w else "(deleted)"
        return out

    def label(self, overrides: Sequence[str]) -> str:
        """The point's swept overrides, e.g. ``lr=0.1 batch=64`` ('' when nothing differs)."""
        return " ".join(w for w in overrides if self.is_swept(key(w)))


def declared_keys(task_overrides: Sequence[str], sweeper: Any) -> List[str]:
    """Keys the user asked to sweep: sweep overrides (``x=1,2``, ``lr=interval(0,1)``) of the
    command line, and the keys of ``hydra.sweeper.params``."""
    out: List[str] = []
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides([str(o) for o in task_overrides])
        out += [key(p.get_key_element()) for p in parsed if p.is_sweep_override()]
    except Exception:  # an override Hydra itself accepted but we cannot read: fall back to what differs
        pass
    params = sweeper.get("params") if sweeper is not None and hasattr(sweeper, "get") else None
    if params:
        out += [str(k) for k in params.keys()]
    return out


def _own(k: str) -> bool:
    return k.startswith(OWN_GROUPS) or k == "hydra/launcher"
