"""Safe extraction of an nrun artifact on the executing side.

This file is shipped beside the code into containers and onto remote hosts, whose Python may lack
nrun's dependencies, so it imports only the standard library (3.8+) and runs as a script:

    python unpack.py ARCHIVE DEST

An archive is refused, before anything lands in DEST, when a member has an absolute path, a
``..`` component, is a device or fifo, or is a link that points (or, through other links,
resolves) outside DEST. Extraction goes to a temporary sibling that is renamed into place, so
DEST is either absent, or complete; and a second call for the same artifact is a no-op (a marker
file records which artifact DEST holds), which makes concurrent unpacks of one artifact on one
host safe.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used, to keep ``import nrun_core.packaging`` cheap
    import tarfile

MARKER = ".nrun-unpacked"
_DIGEST_NAME = re.compile(r"^([0-9a-f]{64})\.tar(\.gz|\.bz2|\.xz)?$")


class UnpackError(Exception):
    """The archive could not be unpacked into the destination."""


class UnsafeArchiveError(UnpackError):
    """The archive holds a member that could write outside the destination."""


def archive_identity(archive: Path) -> str:
    """Which artifact this is: the digest in its content-addressed name, else a hash of its bytes."""
    import hashlib

    match = _DIGEST_NAME.match(archive.name)
    if match:
        return match.group(1)
    h = hashlib.sha256()
    with open(archive, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256-of-file:" + h.hexdigest()


def held_identity(dest: Path) -> str | None:
    """The identity recorded by a previous complete unpack into ``dest``, if any."""
    try:
        return json.loads((dest / MARKER).read_text())["identity"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def unpack(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` (absent or empty), refusing unsafe members; returns dest."""
    import shutil
    import tempfile

    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise UnpackError(f"artifact {archive} does not exist (was it copied to this host?)")
    identity = archive_identity(archive)
    if held_identity(dest) == identity:
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if held_identity(dest) == identity:  # a concurrent unpack finished between the two checks
            return dest
        raise UnpackError(
            f"cannot unpack {archive.name} into {dest}: it already holds something else "
            f"(held artifact: {held_identity(dest) or 'none'}). Remove it or choose an empty directory."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
    try:
        _extract_all(archive, tmp)
        (tmp / MARKER).write_text(json.dumps({"identity": identity, "archive": str(archive)}))
        os.chmod(tmp, 0o755)  # mkdtemp made it 0700: the tree must be readable by whoever runs the code
        _move_into_place(tmp, dest, identity)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _move_into_place(tmp: Path, dest: Path, identity: str) -> None:
    """Rename the finished tree onto dest; a concurrent unpack of the same artifact may have won."""
    try:
        if dest.is_dir():
            dest.rmdir()  # empty, checked above; a racing unpack may refill it (then rename fails)
        os.rename(tmp, dest)
    except OSError:
        if held_identity(dest) != identity:
            raise UnpackError(f"cannot unpack into {dest}: another process filled it meanwhile") from None


def _extract_all(archive: Path, root: Path) -> None:
    """Check each member, then extract it; finally check that every link resolves inside."""
    import tarfile

    real_root = os.path.realpath(root)
    links: list[str] = []
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise UnpackError(f"{archive} is not a readable tar archive: {e}") from e
    with tar:
        for member in tar:
            name = _safe_name(member.name, archive)
            if name is None:  # the archive root itself ("./")
                continue
            _check_member(member, name, archive)
            target = os.path.join(real_root, name)
            parent = os.path.realpath(os.path.dirname(target))
            if not _inside(parent, real_root):
                raise UnsafeArchiveError(
                    f"refusing {archive.name}: member {member.name!r} would be written through a "
                    f"link to {parent}, outside the destination"
                )
            if member.issym():
                if not _inside(os.path.realpath(os.path.join(os.path.dirname(target), member.linkname)), real_root):
                    raise UnsafeArchiveError(
                        f"refusing {archive.name}: link {member.name!r} -> {member.linkname!r} "
                        "resolves outside the destination"
                    )
                links.append(target)
            elif member.isreg() and os.path.islink(target):
                os.unlink(target)  # never write a file through a link left by an earlier member
            clean = _sanitised(member, name)
            try:
                _extract_one(tar, clean, real_root)
            except (tarfile.TarError, OSError) as e:
                if isinstance(e, getattr(tarfile, "FilterError", ())):
                    raise UnsafeArchiveError(f"refusing {archive.name}: {e}") from e
                raise UnpackError(f"cannot extract {member.name!r} from {archive}: {e}") from e
    for link in links:
        if not _inside(os.path.realpath(link), real_root):
            raise UnsafeArchiveError(
                f"refusing {archive.name}: link {os.path.relpath(link, real_root)!r} resolves "
                "outside the destination through other links"
            )


def _safe_name(raw: str, archive: Path) -> str | None:
    """The member's relative POSIX path, or an UnsafeArchiveError for absolute or ``..`` paths."""
    if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw):
        raise UnsafeArchiveError(f"refusing {archive.name}: member {raw!r} has an absolute path")
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"refusing {archive.name}: member {raw!r} has a '..' component")
    return "/".join(parts) or None


def _check_member(member: tarfile.TarInfo, name: str, archive: Path) -> None:
    """Only files, directories and links that stay inside; never devices or fifos."""
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(
            f"refusing {archive.name}: member {member.name!r} is a device, fifo or other special file"
        )
    if member.issym():
        link = member.linkname
        if link.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", link):
            raise UnsafeArchiveError(
                f"refusing {archive.name}: link {member.name!r} -> {link!r} points to an absolute path"
            )
        resolved = os.path.normpath(os.path.join(os.path.dirname(name), link))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchiveError(
                f"refusing {archive.name}: link {member.name!r} -> {link!r} points outside the destination"
            )
    if member.islnk():
        _safe_name(member.linkname, archive)


def _sanitised(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """A copy with the checked name, no owner, and no setuid/setgid/sticky or group/other write."""
    import copy

    clean = copy.copy(member)
    clean.name = name
    if member.islnk():
        clean.linkname = _safe_name(member.linkname, Path("archive")) or ""
    clean.uid = clean.gid = 0
    clean.uname = clean.gname = ""
    if member.isdir():
        clean.mode = 0o755
    elif member.isreg() or member.islnk():
        clean.mode = 0o755 if member.mode & 0o100 else 0o644
    return clean


def _extract_one(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str) -> None:
    """Extract with the stdlib 'data' filter where this Python has it (3.8.17+, 3.11.4+)."""
    import tarfile

    if hasattr(tarfile, "data_filter"):
        tar.extract(member, root, set_attrs=not member.issym(), filter="data")
    else:  # pragma: no cover - old Pythons on remote hosts
        tar.extract(member, root, set_attrs=False)
        if member.isreg() or member.isdir():
            os.chmod(os.path.join(root, member.name), member.mode)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def main(argv: list[str] | None = None) -> int:
    """``python unpack.py ARCHIVE DEST``: prints DEST; exit 2 with the reason when refused."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python unpack.py ARCHIVE DEST", file=sys.stderr)
        return 2
    try:
        print(unpack(Path(args[0]), Path(args[1])))
    except UnpackError as e:
        print(f"nrun unpack: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
