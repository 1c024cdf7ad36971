"""The packagers that read a directory from disk: ``workdir`` (.gitignore rules) and ``pattern`` (globs).

Both leave out the launch's output dirs and NRUN_HOME (``exclude.Excluder``); ``workdir`` applies
its ``exclude`` patterns the same way (as git would, on top of .gitignore).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nrun_core.errors import PackagingError
from nrun_core.packaging import fstree, gitrepo, store, walkcache
from nrun_core.packaging.exclude import Excluder, Extra
from nrun_core.packaging.ignore import find_repo, workdir_files
from nrun_core.packaging.manifest import build, caller_position, file_rows
from nrun_core.packaging.pattern import pattern_files

SETTING = gitrepo.SETTING


def base_dir(cfg: dict[str, Any], source_dir: Path) -> Path:
    """``base_dir`` resolved against the launch directory; it must exist."""
    base = (source_dir / Path(cfg["base_dir"]).expanduser()).resolve()
    if not base.is_dir():
        raise PackagingError(f"{SETTING}.base_dir={cfg['base_dir']!r}: {base} is not a directory (relative paths start at {source_dir})")
    return base


def pack_workdir(cfg: dict[str, Any], source_dir: Path, extra_exclude: Extra = ()) -> tuple[str, dict[str, Any], str]:
    """The directory as .gitignore and ``exclude`` leave it. A re-launch of an unchanged tree
    reuses the last walk's answer (``walkcache``: a stat per directory and per file, no listing,
    no hashing, no git) whenever that answer provably still holds."""
    base = base_dir(cfg, source_dir)
    ex = Excluder(base, cfg.get("exclude") or [], extra_exclude, source_dir=source_dir)
    workdir = caller_position(source_dir, base)
    outputs = sorted(ex.dirs)
    key = store.key("walk", str(base), ex.patterns)
    rec = walkcache.load(key)
    files = None
    walk = walkcache.Walk()  # its clock starts before any stat is taken
    if rec is not None and walkcache.listing_holds(rec, outputs):
        if walkcache.unchanged_files(rec) and store.has(rec["digest"]):
            return rec["digest"], _warm_manifest(cfg, source_dir, base, ex, rec, workdir, key), workdir
        files = walkcache.files_of(rec)  # the same files: re-hash only those whose stat changed
        walk.dirs, walk.sources, walk.pruned = rec["dirs"], rec["sources"], rec["pruned"]
    if files is None:
        walk = walkcache.Walk()
        files = workdir_files(base, ex.own if ex else None, record=walk)
    if not files:
        raise PackagingError(f"{SETTING}.base_dir={cfg['base_dir']!r}: no files to pack under {base} (all ignored by .gitignore or left out by exclude={cfg['exclude']}?)")
    packed = fstree.pack_files(files, store.key("stat", str(base)), SETTING, "add them to .gitignore")
    commit, changes = _provenance(base, ex)
    pruned = [p for p in walk.pruned if p not in ex.dirs]
    walkcache.save(key, walk.started_ns, walk.dirs, walk.sources, pruned, outputs, files, packed.entries,
                   packed.digest, packed.info, (walkcache.git_state(base), packed.digest, commit, changes))
    manifest = build(
        cfg=cfg, source_dir=source_dir, root=base, commit=commit, dirty=bool(changes), dirty_files=changes,
        left_out=[], files=file_rows(packed.entries), digest=packed.digest, workdir=workdir, info=packed.info,
        reused=packed.reused,
    )
    return packed.digest, manifest, workdir


def _warm_manifest(cfg: dict[str, Any], source_dir: Path, base: Path, ex: Excluder, rec: dict, workdir: str,
                   key: str) -> dict[str, Any]:
    """The manifest of an unchanged tree from its walk record; git is asked again only if HEAD,
    its ref or the index changed since."""
    state, digest, commit, changes = rec["prov"]
    now = walkcache.git_state(base)
    if now is None or now != state or digest != rec["digest"]:
        commit, changes = _provenance(base, ex)
        rec["prov"] = (walkcache.git_state(base), rec["digest"], commit, changes)
        walkcache.rewrite(key, rec)
    info = {"archive_bytes": rec["archive_bytes"], "created": rec["created"]}
    return build(
        cfg=cfg, source_dir=source_dir, root=base, commit=commit, dirty=bool(changes), dirty_files=list(changes),
        left_out=[], files=rec["rows"], digest=rec["digest"],
        workdir=workdir, info=info, reused=True,
    )


def pack_pattern(cfg: dict[str, Any], source_dir: Path, extra_exclude: Extra = ()) -> tuple[str, dict[str, Any], str]:
    base = base_dir(cfg, source_dir)
    ex = Excluder(base, [], extra_exclude, source_dir=source_dir)
    files = pattern_files(base, cfg["include"], cfg["exclude"], ex.own if ex else None)
    if not files:
        raise PackagingError(
            f"{SETTING}.include={cfg['include']}: no file under {base} matches (exclude={cfg['exclude']}); "
            "globs use .gitignore syntax relative to base_dir, e.g. ['*.py', 'configs/**']"
        )
    packed = fstree.pack_files(files, store.key("stat", str(base)), SETTING, f"add them to {SETTING}.exclude")
    workdir = caller_position(source_dir, base)
    manifest = build(
        cfg=cfg, source_dir=source_dir, root=base, commit=None, dirty=False, dirty_files=[], left_out=[],
        files=file_rows(packed.entries), digest=packed.digest, workdir=workdir, info=packed.info,
        reused=packed.reused,
    )
    return packed.digest, manifest, workdir


def _provenance(base: Path, ex: Excluder) -> tuple[str | None, list[str]]:
    """HEAD and the uncommitted paths under ``base`` when it lies in a git work tree (best effort)."""
    top, gitdir = find_repo(base)
    if gitdir is None:
        return None, []
    try:
        head = gitrepo.git(["rev-parse", "--verify", "--quiet", "HEAD"], top)
        if head.returncode != 0:
            return None, []
        rel = base.relative_to(top).as_posix()
        return head.stdout.decode().strip(), gitrepo.uncommitted(top, "" if rel == "." else rel, True, ex)[0]
    except (PackagingError, OSError, ValueError):
        return None, []
