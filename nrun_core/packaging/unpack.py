"""Safe extraction of an nrun artifact on the executing side.

This file is shipped beside the code into containers and onto remote hosts, whose Python may lack
nrun's dependencies, so it imports only the standard library (3.8+) and runs as a script:

    python unpack.py ARCHIVE DEST        (or: python -m nrun_core.packaging.unpack ARCHIVE DEST)

An archive is refused, and nothing lands in DEST, when a member has an absolute path or a ``..``
component, is a device, fifo or sparse file, is a link that points (or, through other links,
resolves) outside DEST, repeats a path, lies below a file or link, uses nrun's own marker name,
or when the archive is damaged or exceeds the limits (members, bytes, bytes per file: see
``Limits``). Extraction goes to a temporary sibling that is renamed into place, so DEST is either
absent or complete; a second call for the same artifact is a no-op (a marker file records which
artifact DEST holds), which makes concurrent unpacks of one artifact on one host safe.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used, to keep ``import nrun_core.packaging`` cheap
    import tarfile

MARKER = ".nrun-unpacked"
RESERVED = (MARKER,)  # names nrun itself writes at the root of DEST
_DIGEST_NAME = re.compile(r"^([0-9a-f]{64})\.tar(\.gz|\.bz2|\.xz)?$")
_CHUNK = 1 << 20
_MAX_READ = 16 << 20  # no single read of a sound archive is larger: data is copied in 16 KiB reads
_ZERO_BLOCK = bytes(512)

# Limits: generous for code trees (the Linux kernel is ~90k files, 1.5 GB), small enough that a
# hostile or broken artifact cannot fill a node's disk or run for minutes (200k files: ~20 s).
DEFAULT_MAX_FILES = 200_000
DEFAULT_MAX_BYTES = 20 << 30
ENV_MAX_FILES = "NRUN_UNPACK_MAX_FILES"
ENV_MAX_BYTES = "NRUN_UNPACK_MAX_BYTES"
ENV_MAX_FILE_BYTES = "NRUN_UNPACK_MAX_FILE_BYTES"


class UnpackError(Exception):
    """The archive could not be unpacked into the destination."""


class UnsafeArchiveError(UnpackError):
    """The archive holds a member that could write outside the destination."""


class LimitError(UnpackError):
    """The archive holds more members or bytes than the unpack limits allow."""


class Limits:
    """Caps on what one unpack may write; None means no cap.

    ``max_files``: members (files, directories, links). ``max_bytes``: the uncompressed tar stream
    (contents plus 512-byte headers), counted as it is decompressed, so a gzip bomb stops at the
    cap whatever its headers claim. ``max_file_bytes``: one file (default: none beyond max_bytes).
    Each comes from the keyword argument, else the environment variable, else the default; 0 means
    no cap. A member whose header is over a cap is refused before any of it is written.
    """

    def __init__(self, max_files: int | None = None, max_bytes: int | None = None,
                 max_file_bytes: int | None = None) -> None:
        self.max_files = _limit(max_files, ENV_MAX_FILES, DEFAULT_MAX_FILES, sizes=False)
        self.max_bytes = _limit(max_bytes, ENV_MAX_BYTES, DEFAULT_MAX_BYTES, sizes=True)
        self.max_file_bytes = _limit(max_file_bytes, ENV_MAX_FILE_BYTES, 0, sizes=True)


def _limit(value: int | None, env: str, default: int, sizes: bool) -> int | None:
    """The keyword, else ``$env``, else ``default``; 0 = no cap; sizes may end in K, M, G or T (binary)."""
    raw = os.environ.get(env, "").strip() if value is None else value
    if raw == "":
        return default or None
    match = re.match(r"^(\d+)\s*(?:([KMGT])i?B?)?$", str(raw), re.IGNORECASE) if not isinstance(raw, bool) else None
    if match is None or (match.group(2) and not sizes):
        what = env if value is None else env.replace("NRUN_UNPACK_", "").lower()
        unit = " of bytes, optionally with K, M, G or T" if sizes else ""
        raise UnpackError(f"{what}={raw!r} is not a valid limit; use a whole number{unit} "
                          f"(e.g. {what}={'40G' if sizes else '400000'}), or 0 for no limit")
    n = int(match.group(1)) << (10 * " KMGT".index(match.group(2).upper()) if match.group(2) else 0)
    return n or None


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3g} {unit}"
    return f"{n} bytes"


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


def unpack(archive: Path, dest: Path, *, max_files: int | None = None, max_bytes: int | None = None,
           max_file_bytes: int | None = None) -> Path:
    """Extract ``archive`` into ``dest`` (absent or empty), refusing unsafe members; returns dest.

    The limits are those of ``Limits`` (keyword, else ``NRUN_UNPACK_MAX_*``, else the default).
    """
    import shutil
    import tempfile

    archive, dest = Path(archive), Path(dest)
    limits = Limits(max_files, max_bytes, max_file_bytes)
    if not archive.is_file():
        raise UnpackError(f"artifact {archive} does not exist (was it copied to this host?)")
    try:
        identity = archive_identity(archive)
    except OSError as e:
        raise UnpackError(f"cannot read artifact {archive}: {e.strerror or e}; check its permissions") from e
    if held_identity(dest) == identity:
        return dest
    try:
        occupied = dest.exists() and (not dest.is_dir() or any(dest.iterdir()))
    except OSError as e:
        raise UnpackError(f"cannot unpack into {dest}: {e.strerror or e}; choose a readable, writable destination") from e
    if occupied:
        if held_identity(dest) == identity:  # a concurrent unpack finished between the two checks
            return dest
        raise UnpackError(
            f"cannot unpack {archive.name} into {dest}: it already holds something else "
            f"(held artifact: {held_identity(dest) or 'none'}). Remove it or choose an empty directory."
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
    except OSError as e:
        raise UnpackError(f"cannot unpack into {dest}: {e.strerror or e}; choose a writable destination") from e
    try:
        _extract_all(archive, tmp, limits)
        _write_marker(tmp, identity, archive)
        os.chmod(tmp, 0o755)  # mkdtemp made it 0700: the tree must be readable by whoever runs the code
        _move_into_place(tmp, dest, identity)
    except OSError as e:  # disk full, permissions: the tree is incomplete, so nothing lands
        raise UnpackError(f"cannot unpack {archive} into {dest}: {e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write_marker(root: Path, identity: str, archive: Path) -> None:
    """Create the marker; O_EXCL|O_NOFOLLOW: never through, or over, anything the archive put there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(root / MARKER, flags, 0o644), "w") as f:
        f.write(json.dumps({"identity": identity, "archive": str(archive)}))


def _move_into_place(tmp: Path, dest: Path, identity: str) -> None:
    """Rename the finished tree onto dest; a concurrent unpack of the same artifact may have won."""
    try:
        if dest.is_dir():
            dest.rmdir()  # empty, checked above; a racing unpack may refill it (then rename fails)
        os.rename(tmp, dest)
    except OSError:
        if held_identity(dest) != identity:
            raise UnpackError(f"cannot unpack into {dest}: another process filled it meanwhile") from None


class _Stream:
    """The decompressed tar stream, read forward only, refusing to yield more than ``max_bytes``.

    Counting what is decompressed (not what headers claim) stops a gzip bomb at the cap, and
    refusing huge single reads stops a forged pax or long-name header from filling memory.
    """

    def __init__(self, archive: Path, limits: Limits) -> None:
        self.archive, self.limits, self.pos, self.last = archive, limits, 0, b""
        self._raw = open(archive, "rb")  # noqa: SIM115 - closed by __exit__
        magic = self._raw.read(6)
        self._raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            import gzip

            self._f = gzip.GzipFile(fileobj=self._raw, mode="rb")
        elif magic[:3] == b"BZh":
            import bz2

            self._f = bz2.BZ2File(self._raw)
        elif magic == b"\xfd7zXZ\x00":
            import lzma

            self._f = lzma.LZMAFile(self._raw)  # noqa: SIM115 - closed by __exit__
        else:
            self._f = self._raw

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > _MAX_READ:
            raise UnsafeArchiveError(f"refusing {self.archive.name}: a tar header at byte {self.pos} claims "
                                     f"{_size(n) if n and n > 0 else 'unbounded'} of metadata; sound archives have none over {_size(_MAX_READ)}")
        cap = self.limits.max_bytes
        try:
            data = self._f.read(n if cap is None else min(n, cap - self.pos + 1))
        except Exception as e:  # zlib.error, lzma.LZMAError, EOFError, OSError: a damaged file
            raise UnpackError(f"{self.archive} is truncated or corrupt ({type(e).__name__}: {e}); "
                              "copy it again or pack again") from e
        self.pos += len(data)
        self.last = data
        if cap is not None and self.pos > cap:
            raise LimitError(_over(self.archive, f"more than {_size(cap)} uncompressed", ENV_MAX_BYTES, cap))
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset + (self.pos if whence == 1 else 0)
        if whence not in (0, 1) or target < self.pos:
            raise UnpackError(f"cannot unpack {self.archive}: it must be read out of order (a hard link to a later "
                              "member?); nrun artifacts never need that, so pack it again")
        while self.pos < target and self.read(min(_CHUNK, target - self.pos)):
            pass
        return self.pos

    def __enter__(self) -> _Stream:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()
        self._raw.close()


def _over(archive: Path, what: str, env: str, limit: int) -> str:
    return (f"refusing {archive}: it holds {what} (limit {env}={limit}). If this artifact is genuine, raise the "
            f"limit where it is unpacked (e.g. {env}={limit * 2}, or 0 for none) or pack fewer or smaller files")


def _extract_all(archive: Path, root: Path, limits: Limits) -> None:
    """Check each member, then extract it; finally check the archive's end and every link."""
    real_root = os.path.realpath(root)
    links: list[str] = []
    seen: dict[str, str] = {}  # path -> "dir" | "file" | "link": what the archive put there
    with _Stream(archive, limits) as stream, _open_tar(stream, archive) as tar:
        for member in _members(tar, archive, limits):
            name = _safe_name(member.name, archive)
            if name is None:  # the archive root itself ("./")
                continue
            _check_member(member, name, archive)
            _check_size(member, stream.pos, limits, archive)
            _claim(seen, member, name, archive)
            target = os.path.join(real_root, name)
            _check_links(member, target, real_root, archive)
            if member.issym():
                links.append(target)
            _extract_one(tar, _sanitised(member, name), real_root, archive)
        _check_end(stream, archive, len(tar.members))
    for link in links:
        if not _inside(os.path.realpath(link), real_root):
            raise UnsafeArchiveError(
                f"refusing {archive.name}: link {os.path.relpath(link, real_root)!r} resolves "
                "outside the destination through other links"
            )


def _open_tar(stream: _Stream, archive: Path) -> tarfile.TarFile:
    import tarfile

    try:
        return tarfile.open(fileobj=stream, mode="r:")  # type: ignore[call-overload]
    except tarfile.TarError as e:
        raise UnpackError(f"{archive} is not a readable tar archive: {e}") from e


def _members(tar: tarfile.TarFile, archive: Path, limits: Limits) -> Iterator[tarfile.TarInfo]:
    """The members in order, counted against ``max_files``; a broken header is an UnpackError."""
    import tarfile

    count = 0
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as e:
            raise UnpackError(f"{archive} is damaged after {count} members ({e}); copy it again or pack again") from e
        if member is None:
            return
        count += 1
        if limits.max_files is not None and count > limits.max_files:
            raise LimitError(_over(archive, f"more than {limits.max_files} members", ENV_MAX_FILES, limits.max_files))
        yield member


def _check_end(stream: _Stream, archive: Path, count: int) -> None:
    """tarfile stops quietly at a bad header: require a real end-of-archive block, then only zeros."""
    damaged = f"{archive} is damaged after {count} members (no end-of-archive marker); copy it again or pack again"
    if stream.last != _ZERO_BLOCK:
        raise UnpackError(damaged)
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return
        if chunk.strip(b"\0"):
            raise UnpackError(damaged.replace("no end-of-archive marker", "data after the end-of-archive marker"))


def _safe_name(raw: str, archive: Path) -> str | None:
    """The member's relative POSIX path, or an UnsafeArchiveError for absolute or ``..`` paths."""
    if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw):
        raise UnsafeArchiveError(f"refusing {archive.name}: member {raw!r} has an absolute path")
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"refusing {archive.name}: member {raw!r} has a '..' component")
    return "/".join(parts) or None


def _check_member(member: tarfile.TarInfo, name: str, archive: Path) -> None:
    """Only files, directories and links that stay inside; no devices, fifos, sparse files or nrun's names."""
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(
            f"refusing {archive.name}: member {member.name!r} is a device, fifo or other special file"
        )
    if member.issparse():
        raise UnsafeArchiveError(f"refusing {archive.name}: member {member.name!r} is a sparse file; nrun artifacts have none")
    top = name.split("/")[0]
    if top.casefold() in RESERVED:
        raise UnsafeArchiveError(
            f"refusing {archive.name}: member {member.name!r} uses the name {top!r}, which nrun keeps for "
            "itself at the root (it marks a finished unpack); rename or remove it in the packed tree"
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


def _check_size(member: tarfile.TarInfo, pos: int, limits: Limits, archive: Path) -> None:
    """Refuse a member whose declared size is over a cap before writing any of it."""
    if not member.isreg():
        return
    if limits.max_file_bytes is not None and member.size > limits.max_file_bytes:
        raise LimitError(_over(archive, f"{member.name!r} of {_size(member.size)}", ENV_MAX_FILE_BYTES, limits.max_file_bytes))
    if limits.max_bytes is not None and pos + member.size > limits.max_bytes:
        raise LimitError(_over(archive, f"more than {_size(limits.max_bytes)} uncompressed ({member.name!r} "
                                        f"of {_size(member.size)} at byte {pos})", ENV_MAX_BYTES, limits.max_bytes))


def _claim(seen: dict[str, str], member: tarfile.TarInfo, name: str, archive: Path) -> None:
    """Each path once, below directories only; a hard link only to an earlier file.

    So no member can replace a directory (with a link to write through), truncate a file that an
    earlier hard link shares, or depend on what the filesystem happened to hold.
    """
    parts = name.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        kind = seen.setdefault(parent, "dir")
        if kind != "dir":
            raise UnsafeArchiveError(
                f"refusing {archive.name}: member {member.name!r} lies below {parent!r}, which the archive made a {kind}"
            )
    kind = "dir" if member.isdir() else "link" if member.issym() else "file"
    old = seen.get(name)
    if old is not None and (old, kind) != ("dir", "dir"):
        raise UnsafeArchiveError(
            f"refusing {archive.name}: path {name!r} appears twice (a {old}, then a {kind}); nrun artifacts never repeat a path"
        )
    if member.islnk():
        to = _safe_name(member.linkname, archive)
        if seen.get(to or "") != "file":
            raise UnsafeArchiveError(
                f"refusing {archive.name}: hard link {member.name!r} -> {member.linkname!r} does not name a file earlier in the archive"
            )
    seen[name] = kind


def _check_links(member: tarfile.TarInfo, target: str, real_root: str, archive: Path) -> None:
    """Resolve what is on disk now: the member's parent and any link target must stay inside."""
    parent = os.path.realpath(os.path.dirname(target))
    if not _inside(parent, real_root):
        raise UnsafeArchiveError(
            f"refusing {archive.name}: member {member.name!r} would be written through a link to {parent}, outside the destination"
        )
    if member.issym() or member.islnk():
        base = os.path.dirname(target) if member.issym() else real_root
        if not _inside(os.path.realpath(os.path.join(base, member.linkname)), real_root):
            raise UnsafeArchiveError(
                f"refusing {archive.name}: link {member.name!r} -> {member.linkname!r} resolves outside the destination"
            )


def _sanitised(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """A copy with the checked name, no owner, a sane mtime, and no setuid/setgid/sticky or group/other write."""
    import copy

    clean = copy.copy(member)
    clean.name = name
    if member.islnk():
        clean.linkname = _safe_name(member.linkname, Path("archive")) or ""
    clean.uid = clean.gid = 0
    clean.uname = clean.gname = ""
    if not (isinstance(member.mtime, (int, float)) and 0 <= member.mtime < 1 << 33):
        clean.mtime = 0  # os.utime raises OverflowError (not OSError) for out-of-range times
    if member.isdir():
        clean.mode = 0o755
    elif member.isreg() or member.islnk():
        clean.mode = 0o755 if member.mode & 0o100 else 0o644
    return clean


def _extract_one(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, archive: Path) -> None:
    """Extract with the stdlib 'data' filter where this Python has it (3.8.17+, 3.11.4+)."""
    import tarfile

    try:
        if hasattr(tarfile, "data_filter"):
            tar.extract(member, root, set_attrs=not member.issym(), filter="data")
        else:  # pragma: no cover - old Pythons on remote hosts
            tar.extract(member, root, set_attrs=False)
            if member.isreg() or member.isdir():
                os.chmod(os.path.join(root, member.name), member.mode)
    except (tarfile.TarError, OSError, ValueError, OverflowError) as e:
        if isinstance(e, getattr(tarfile, "FilterError", ())):
            raise UnsafeArchiveError(f"refusing {archive.name}: {e}") from e
        raise UnpackError(f"cannot extract {member.name!r} from {archive}: {e}") from e


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def main(argv: list[str] | None = None) -> int:
    """``python unpack.py ARCHIVE DEST``: prints DEST; exit 2 with the reason when refused."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(f"usage: python unpack.py ARCHIVE DEST  (limits: {ENV_MAX_FILES}, {ENV_MAX_BYTES}, "
              f"{ENV_MAX_FILE_BYTES}; 0 = none)", file=sys.stderr)
        return 2
    try:
        print(unpack(Path(args[0]), Path(args[1])))
    except UnpackError as e:
        print(f"nrun unpack: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
