"""The hybrid packager: several packagers' artifacts combined into one, under subfolders or merged.

Each part is packed (and cached) on its own; the combined digest is computed from the parts'
recorded entries, so an unchanged combination is found without reading any archive. Merged at
the root, two parts may carry the same path only with identical content.
"""

from __future__ import annotations

import copy
import tarfile
from pathlib import Path
from typing import Any, Callable

from nrun_core.errors import PackagingError
from nrun_core.packaging import store
from nrun_core.packaging.compress import GzipSink
from nrun_core.packaging.digest import Entry, tree_digest
from nrun_core.packaging.manifest import build, file_rows

SETTING = "hydra.launcher.packager"


def pack(
    cfg: dict[str, Any], source_dir: Path, extra_exclude: Any = (), *, package: Callable[..., Any]
) -> tuple[str, dict[str, Any], str]:
    """``package(part, source_dir=...)`` packs one part config into an Artifact; it applies the
    launch's ``extra_exclude`` to every part, so this function does not use it itself."""
    arts = {key: _part(package, key, part, source_dir) for key, part in cfg["parts"].items()}
    prefixes = {key: "" if cfg["merge"] else key.strip("/") + "/" for key in arts}
    combined: dict[str, tuple[Entry, str]] = {}
    for key, art in arts.items():
        for e in store.load_entries(art.digest):
            path = prefixes[key] + e.path
            seen = combined.get(path)
            if seen and (seen[0].oid, seen[0].mode) != (e.oid, e.mode):
                raise PackagingError(
                    f"{SETTING}.parts: {seen[1]} and {key} both contain {path!r} with different content, and "
                    "merge=true puts them at the same place. Exclude it from one part, or set merge=false "
                    "to give each part its own subfolder."
                )
            combined.setdefault(path, (Entry(path, e.mode, e.size, e.oid), key))
    entries = [entry for entry, _ in combined.values()]
    digest = tree_digest(entries)
    reused = store.has(digest)
    if not reused:
        _write(arts, prefixes, digest, entries)
    first = next(iter(arts))
    wf = cfg["workdir_from"] or first
    workdir = (prefixes[wf] + arts[wf].workdir).strip("/")
    with_commit = [a.manifest for a in arts.values() if a.manifest.get("commit")]
    manifest = build(
        cfg=cfg, source_dir=source_dir, root=source_dir,
        commit=with_commit[0]["commit"] if with_commit else None,
        dirty=any(a.manifest["dirty"] for a in arts.values()),
        dirty_files=[f"{k}: {p}" for k, a in arts.items() for p in a.manifest["dirty_files"]],
        left_out=[f"{k}: {p}" for k, a in arts.items() for p in a.manifest["left_out"]],
        files=file_rows(entries), digest=digest, workdir=workdir, info=store.load_info(digest), reused=reused,
        parts={
            k: {key: a.manifest[key] for key in ("packager", "digest", "commit", "dirty", "workdir", "root")}
            for k, a in arts.items()
        },
    )
    return digest, manifest, workdir


def _part(package: Callable[..., Any], key: str, part: dict[str, Any], source_dir: Path) -> Any:
    """Pack one part; its errors name the part's own setting (``...packager.parts.<key>.<option>``)."""
    try:
        return package(part, source_dir=source_dir)
    except PackagingError as e:
        msg, where = str(e), f"{SETTING}.parts.{key}"
        raise PackagingError(msg.replace(SETTING, where, 1) if msg.startswith(SETTING) else f"{where}: {msg}") from e


def _write(arts: dict[str, Any], prefixes: dict[str, str], digest: str, entries: list[Entry]) -> None:
    """Copy the parts' members, renamed under their prefixes, into one new archive."""
    tmp = store.new_tmp_archive()
    sink = GzipSink(tmp)
    written: set[str] = set()
    try:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out:  # type: ignore[call-overload]
            for key, art in arts.items():
                with tarfile.open(art.path, "r:*") as src:
                    for m in src:
                        name = prefixes[key] + (m.name[2:] if m.name.startswith("./") else m.name).rstrip("/")
                        if m.isdir() or name in written or not (m.isreg() or m.issym()):
                            continue
                        written.add(name)
                        member = copy.copy(m)
                        member.name = name
                        out.addfile(member, src.extractfile(m) if m.isreg() else None)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    store.publish(tmp, digest, entries)
