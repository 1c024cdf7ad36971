"""`nrun gc`: reclaim NRUN_HOME (artifacts, snapshots, runtime copies, old sweeps' records).

What stays, always:
- every sweep the keep policy keeps (the newest ``keep_sweeps``, and those younger than
  ``keep_days``) and every live one (not finished in the store, or its detached supervisor is
  alive), with the artifacts and snapshots they reference (hybrid parts included);
- anything younger than ``GRACE_S`` (an artifact just packed or reused, a snapshot being
  unpacked, an archive being written): a launcher packs and unpacks before it records its sweep,
  and touches a reused artifact and snapshot, so what it is about to use is always young;
- the runtime copy of this nrun, and any runtime copy at all while a sweep is live (a copy is not
  tied to a sweep in the store);
- the sandboxes and the store file itself.
Staging dirs of cloud sweeps (``skypilot/<sweep>``: hard links to the artifact, nrun's helpers)
are needed only while their sweep is live; the launcher removes its own at the end, gc what a
dead launcher left.
Never touched: the sweeps' own output dirs (Hydra's job dirs are the user's results).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from nrun_core import procs
from nrun_core.store import TERMINAL, Store

GRACE_S = 600.0           # younger than this: maybe in use by a launcher that has not recorded it yet
DEFAULT_KEEP_DAYS = 30.0
DEFAULT_KEEP_SWEEPS = 50


@dataclass
class Plan:
    """What gc would remove, and what it keeps and why."""

    sweeps: List[str] = field(default_factory=list)                # store rows to forget
    paths: List[Tuple[str, Path, int]] = field(default_factory=list)  # (kind, path, bytes)
    kept_sweeps: int = 0
    live_sweeps: int = 0
    kept_digests: Set[str] = field(default_factory=set)

    @property
    def bytes(self) -> int:
        return sum(n for _, _, n in self.paths)


def plan(store: Store, home: Path, *, keep_days: Optional[float], keep_sweeps: Optional[int],
         now: Optional[float] = None, grace_s: float = GRACE_S) -> Plan:
    """Decide, without removing anything."""
    now = time.time() if now is None else now
    out = Plan()
    sweeps = store.sweeps(limit=1 << 62)  # newest first
    kept: List[Dict[str, Any]] = []
    for rank, sw in enumerate(sweeps):
        live = _live(sw)
        young = keep_days is not None and (now - (sw.get("created") or 0)) < keep_days * 86400
        newest = keep_sweeps is not None and rank < keep_sweeps
        if live or young or newest:
            kept.append(sw)
            out.live_sweeps += int(live)
        else:
            out.sweeps.append(sw["id"])
    out.kept_sweeps = len(kept)
    for sw in kept:
        out.kept_digests |= _digests(sw.get("artifact"))
    art_dir, snap_dir = home / "artifacts", home / "snapshots"
    old = lambda p: _age(p, now) >= grace_s  # noqa: E731
    # artifacts: <digest>.tar.gz + <digest>.entries.json
    if art_dir.is_dir():
        by_digest: Dict[str, List[Path]] = {}
        for p in art_dir.iterdir():
            if p.is_file() and (p.name.endswith(".tar.gz") or p.name.endswith(".entries.json")):
                by_digest.setdefault(p.name.split(".", 1)[0], []).append(p)
        for digest, files in sorted(by_digest.items()):
            if digest in out.kept_digests or not all(old(f) for f in files):
                continue
            out.paths += [("artifact", f, _size(f)) for f in sorted(files)]
        gone = {d for d in by_digest if d not in out.kept_digests and all(old(f) for f in by_digest[d])}
        for sub in ("index", "stat", "walk"):  # caches: an index entry of a removed artifact, stale caches
            for p in _children(art_dir / sub):
                stale = _age(p, now) >= (keep_days if keep_days is not None else DEFAULT_KEEP_DAYS) * 86400
                if p.is_file() and old(p) and (_index_digest(p) in gone if sub == "index" else stale):
                    out.paths.append((f"cache ({sub})", p, _size(p)))
        for p in _children(art_dir / "tmp"):  # abandoned archives (a launcher died mid-write)
            if old(p):
                out.paths.append(("unfinished archive", p, _size(p)))
    for p in _children(snap_dir):
        name = p.name.split(".unpack-", 1)[0].lstrip(".")
        if name in out.kept_digests or not old(p):
            continue
        out.paths.append(("snapshot" if not p.name.startswith(".") else "unfinished snapshot", p, _size(p)))
    live_ids = {sw["id"] for sw in kept if _live(sw)}
    for p in _children(home / "skypilot"):
        if p.name not in live_ids and old(p):
            out.paths.append(("staging dir", p, _size(p)))
    if not out.live_sweeps:
        current = _current_runtime()
        for p in _children(home / "runtime"):
            if p.name != current and old(p):
                out.paths.append(("runtime copy", p, _size(p)))
    for sid in out.sweeps:
        log = home / "supervisors" / f"{sid}.log"
        if log.is_file():
            out.paths.append(("supervisor log", log, _size(log)))
    return out


def apply(store: Store, p: Plan, *, now: Optional[float] = None, grace_s: float = GRACE_S) -> List[str]:
    """Remove what ``p`` lists; each path is checked again just before (a launcher may have
    touched it since the plan). Returns what could not be removed, with why."""
    problems: List[str] = []
    for kind, path, _ in p.paths:
        t = time.time() if now is None else now
        if kind in ("artifact", "snapshot", "unfinished snapshot") and _age(path, t) < grace_s:
            continue  # used again meanwhile
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, onerror=_writable_then_retry)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
    if p.sweeps:
        store.delete_sweeps(p.sweeps)
        if not store.flush(30.0):
            problems.append(f"the store {store.path} did not take the removal of {len(p.sweeps)} sweep "
                            f"record(s): {store.last_error}")
    return problems


# -- helpers --------------------------------------------------------------------------------
def _live(sw: Dict[str, Any]) -> bool:
    if sw.get("state") not in TERMINAL:
        return True
    return bool(sw.get("detached")) and procs.alive(sw.get("supervisor_pid"), sw.get("supervisor_start"))


def _digests(manifest: Any) -> Set[str]:
    """The artifact of a sweep and, for hybrid ones, its parts'."""
    out: Set[str] = set()
    if isinstance(manifest, dict):
        if manifest.get("digest"):
            out.add(str(manifest["digest"]))
        for part in (manifest.get("parts") or {}).values():
            out |= _digests(part)
    return out


def _index_digest(path: Path) -> Optional[str]:
    import json

    try:
        return str(json.loads(path.read_text()).get("digest"))
    except (OSError, ValueError, AttributeError):
        return None


def _children(d: Path) -> Iterable[Path]:
    try:
        return sorted(d.iterdir())
    except OSError:
        return []


def _age(p: Path, now: float) -> float:
    """Seconds since p was last written or marked used (packagers touch what they reuse); 0 if gone."""
    try:
        return now - p.lstat().st_mtime
    except OSError:
        return 0.0


def _size(p: Path) -> int:
    try:
        st = p.lstat()
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for root, dirs, files in os.walk(p):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _current_runtime() -> str:
    from nrun_core.executors.runtime_copy import runtime_dir

    return os.path.basename(runtime_dir(create=False))


def _writable_then_retry(func: Any, path: str, exc_info: Any) -> None:
    """A read-only directory of an unpacked tree: make it writable by us and try again."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        func(path)
    except OSError:
        raise exc_info[1]
