"""The git packager: ``git archive`` of a ref (and, recursively, its submodules), or the working tree.

Dirty-tree policy, applied when the ref is the checked-out commit:
- ``error`` (default): refuse, listing the uncommitted and untracked (non-ignored) files;
- ``warn``: log them and pack the ref; the manifest lists them under ``left_out``;
- ``include``: pack the working tree as it is (tracked files plus untracked non-ignored ones).

``exclude`` (Hydra's output roots by default) and the launch's output dirs are left out of the
dirty check and of ``include``: untracked or modified files there never make the tree dirty and
are never packed. Committed files there are code, so they are packed as committed (``include``
reads them from HEAD when the working tree changed them). Submodules are never excluded.

A clean tree is looked up in an index keyed by (repository, tree id, options) before anything is
read, so a warm re-launch costs one ``git rev-parse``, one ``git status`` and one ``git ls-files``.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from nrun_core.errors import PackagingError
from nrun_core.packaging import fstree, gitrepo, links, store
from nrun_core.packaging.compress import GzipSink
from nrun_core.packaging.digest import Entry, tree_digest
from nrun_core.packaging.exclude import Excluder, Extra
from nrun_core.packaging.manifest import build, caller_position, file_rows
from nrun_core.packaging.tarstream import relay, trailer

log = logging.getLogger("nrun.packaging")
SETTING = gitrepo.SETTING
_INDEX_VERSION = 1


def pack(cfg: dict[str, Any], source_dir: Path, extra_exclude: Extra = ()) -> tuple[str, dict[str, Any], str]:
    """(digest, manifest, workdir) for a normalized git packager config; see ``package`` for extra_exclude."""
    repo = gitrepo.resolve(source_dir, cfg["ref"], cfg["subpath"])
    root = repo.toplevel / cfg["subpath"] if cfg["subpath"] else repo.toplevel
    ex = Excluder(root, cfg["exclude"], extra_exclude, source_dir=source_dir)
    workdir = caller_position(source_dir, root)
    at_head = repo.commit == repo.head
    policy = cfg["on_dirty"]
    if policy == "include" and not at_head:
        raise PackagingError(
            f"{SETTING}.on_dirty=include packs the working tree, which is at HEAD ({repo.head[:12] if repo.head else '?'}), "
            f"but ref={cfg['ref']} is {repo.commit[:12]}. Set ref=HEAD to pack the working tree, or on_dirty=error to pack the ref."
        )
    changes, hidden = gitrepo.uncommitted(repo.toplevel, cfg["subpath"], cfg["submodules"], ex) if at_head else ([], [])
    if changes and policy == "error":
        raise PackagingError(_dirty_message(changes, cfg["ref"]))
    if changes and policy == "include":
        return _pack_worktree(cfg, source_dir, repo, root, workdir, changes, ex, hidden)
    if changes:
        log.warning(
            "%s.on_dirty=warn: packing %s and leaving out %d uncommitted file(s): %s",
            SETTING, cfg["ref"], len(changes), _shown(changes),
        )
    return _pack_ref(cfg, source_dir, repo, root, workdir, changes)


def _dirty_message(changes: list[str], ref: str) -> str:
    n = len(changes)
    files = "1 file is" if n == 1 else f"{n} files are"
    them = "it" if n == 1 else "them"
    return (
        f"{SETTING}.on_dirty=error: {files} uncommitted: {_shown(changes)}. Commit {them}, set on_dirty=include "
        f"to pack the tree as it is, on_dirty=warn to pack {ref} and go on, or leave generated files out "
        f"with .gitignore or {SETTING}.exclude"
    )


def _shown(paths: list[str], limit: int = 20) -> str:
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def _pack_ref(
    cfg: dict[str, Any], source_dir: Path, repo: gitrepo.Resolved, root: Path, workdir: str, left_out: list[str]
) -> tuple[str, dict[str, Any], str]:
    key = store.key("git-ref", _INDEX_VERSION, str(repo.toplevel), repo.tree, cfg["submodules"])
    rec = store.index_get(key)
    reused = rec is not None
    if rec is None:
        if gitrepo.object_type(repo.toplevel, repo.tree) != "tree":
            raise PackagingError(f"{SETTING}.subpath={cfg['subpath']!r} is a file at {cfg['ref']}; it must be a directory")
        digest, entries, reused = _archive(cfg, repo)
        info = store.load_info(digest)
        rec = {"digest": digest, "files": file_rows(entries), "archive_bytes": info["archive_bytes"], "created": info["created"]}
        store.index_put(key, rec)
    manifest = build(
        cfg=cfg, source_dir=source_dir, root=root, commit=repo.commit, dirty=False, dirty_files=[],
        left_out=left_out, files=rec["files"], digest=rec["digest"], workdir=workdir, info=rec, reused=reused,
    )
    return rec["digest"], manifest, workdir


def _archive(cfg: dict[str, Any], repo: gitrepo.Resolved) -> tuple[str, list[Entry], bool]:
    """Stream git archive (and submodules) into a new store entry; returns (digest, entries, reused)."""
    tmp = store.new_tmp_archive()
    sink = GzipSink(tmp)
    entries: list[Entry] = []
    found_links: list[tuple[str, str]] = []
    try:
        sub = cfg["subpath"]
        treeish = f"{repo.commit}:{sub}" if sub else repo.commit
        worktree = repo.toplevel / sub if sub else repo.toplevel
        _relay_repo(repo.toplevel, treeish, repo.tree, "", worktree, cfg["submodules"], sink, entries, found_links)
        trailer(sink)
        sink.close()
        links.check(found_links, SETTING, "set on_dirty / remove them from the commit")
    except BaseException:
        sink.abort()
        raise
    digest = tree_digest(entries)
    reused = store.has(digest)
    store.publish(tmp, digest, entries)
    return digest, entries, reused


def _relay_repo(
    repo_dir: Path, treeish: str, tree: str, prefix: str, worktree: Path, submodules: bool,
    sink: GzipSink, entries: list[Entry], found_links: list[tuple[str, str]],
) -> None:
    """Relay one repository's archive, then each submodule's under its path (recursively)."""
    what = f"git archive {treeish} in {repo_dir}"
    proc = subprocess.Popen(
        gitrepo.archive_cmd(treeish, prefix), cwd=repo_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=gitrepo.env(), bufsize=1 << 20,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        relay(proc.stdout, sink, entries, found_links, what)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        rc = proc.wait()
    if rc != 0:
        raise PackagingError(f"{SETTING}: {what} failed: {err}")
    if not submodules:
        return
    for path, commit in gitrepo.gitlinks(repo_dir, tree):
        sub_dir = worktree / path
        label = prefix + path
        if not gitrepo.checked_out(sub_dir) or not gitrepo.has_commit(sub_dir, commit):
            raise PackagingError(
                f"{SETTING}.submodules=true: submodule {label} (commit {commit[:12]}) is not available in "
                f"{sub_dir}. Run `git submodule update --init --recursive`, or set submodules=false to pack without it."
            )
        _relay_repo(sub_dir, commit, f"{commit}^{{tree}}", f"{label}/", sub_dir, True, sink, entries, found_links)


def _pack_worktree(
    cfg: dict[str, Any], source_dir: Path, repo: gitrepo.Resolved, root: Path, workdir: str, changes: list[str],
    ex: Excluder, hidden: list[gitrepo.Change],
) -> tuple[str, dict[str, Any], str]:
    """on_dirty=include: tracked files as they are on disk, plus untracked files .gitignore keeps;
    under excluded paths, only committed files, as committed."""
    files: list[fstree.FsFile] = []
    _worktree_files(repo.toplevel, cfg["subpath"], "", cfg["submodules"], files, ex, {c.path for c in hidden})
    (store.root() / "tmp").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.root() / "tmp") as tmp:
        files += _committed(repo.toplevel, cfg["subpath"], hidden, Path(tmp))
        if not files:
            raise PackagingError(f"{SETTING}: nothing to pack under {root}")
        packed = fstree.pack_files(
            files, store.key("stat", str(root)), SETTING, "add them to .gitignore (untracked) or `git rm` them"
        )
    manifest = build(
        cfg=cfg, source_dir=source_dir, root=root, commit=repo.commit, dirty=True, dirty_files=changes,
        left_out=[], files=file_rows(packed.entries), digest=packed.digest, workdir=workdir, info=packed.info,
        reused=packed.reused,
    )
    return packed.digest, manifest, workdir


def _worktree_files(
    repo_dir: Path, subpath: str, out_prefix: str, submodules: bool, out: list[fstree.FsFile],
    ex: Excluder | None = None, hidden: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Tracked files as on disk (but not ``hidden`` ones), untracked ones git and ``ex`` keep; recursively."""
    strip = len(subpath) + 1 if subpath else 0
    tracked, links_, untracked = gitrepo.ls_files(repo_dir, subpath, ex.git_args(subpath) if ex else None)
    for path in (*tracked, *untracked):
        if path in hidden:
            continue
        if path.endswith("/"):  # an untracked nested repository: git itself does not look inside
            log.warning("%s: skipping %s, a nested git repository that is not a submodule", SETTING, path)
            continue
        full = os.path.join(repo_dir, path)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue  # deleted in the working tree: not packed
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            out.append(fstree.FsFile(out_prefix + path[strip:], full, st))
    if not submodules:
        return
    for path in links_:
        sub_dir = repo_dir / path
        if not gitrepo.checked_out(sub_dir):
            raise PackagingError(
                f"{SETTING}.submodules=true: submodule {out_prefix + path[strip:]} is not checked out in {sub_dir}. "
                "Run `git submodule update --init --recursive`, or set submodules=false to pack without it."
            )
        _worktree_files(sub_dir, "", f"{out_prefix}{path[strip:]}/", True, out)


def _committed(repo_dir: Path, subpath: str, hidden: list[gitrepo.Change], tmp: Path) -> list[fstree.FsFile]:
    """HEAD's version of excluded tracked files the working tree changed, written under ``tmp``.

    Run through git's checkout filters (``cat-file --filters``: eol, LFS), as a checkout would.
    """
    strip = len(subpath) + 1 if subpath else 0
    out = []
    for i, c in enumerate(hidden):
        if c.head_mode == "000000":  # staged but never committed: not code yet
            continue
        dest = tmp / str(i)
        if c.head_mode == "120000":
            os.symlink(os.fsdecode(gitrepo.blob(repo_dir, c.head_oid)), dest)
        else:
            data = gitrepo.git_out(["cat-file", "--filters", f"--path={c.path}", c.head_oid], repo_dir, f"{SETTING}.exclude")
            dest.write_bytes(data)
            dest.chmod(0o755 if c.head_mode == "100755" else 0o644)
        out.append(fstree.FsFile(c.path[strip:], str(dest), os.lstat(dest)))
    return out
