"""Relay ``git archive`` tar streams into one archive, describing every file on the way.

Reading git's own output (rather than the object database) makes the digest describe exactly what
was archived, whatever ``.gitattributes`` did (export-ignore, export-subst, eol, LFS smudge).
Only headers are parsed; contents are hashed and forwarded in large chunks, so the cost over a
bare ``git archive | gzip`` is one SHA-1 pass, which runs beside gzip on another core.
Several streams (a repository and its submodules) are concatenated by dropping each one's
end-of-archive blocks and writing a single trailer at the end.
"""

from __future__ import annotations

from typing import IO, Protocol

from nrun_core.errors import PackagingError
from nrun_core.packaging.digest import MODE_EXEC, MODE_FILE, MODE_LINK, Entry, blob_hasher, blob_oid

BLOCK = 512
_CHUNK = 1 << 20
_ZERO = bytes(BLOCK)


class Writer(Protocol):
    def write(self, data: bytes | memoryview) -> int: ...


def relay(src: IO[bytes], out: Writer, entries: list[Entry], links: list[tuple[str, str]], what: str) -> None:
    """Copy one tar stream from ``src`` to ``out`` up to its end-of-archive marker.

    Appends an Entry per regular file or symlink, and (path, target) per symlink to ``links``.
    ``what`` names the stream in errors.
    """
    pax: dict[str, str] = {}
    long_name = long_link = None
    while True:
        hb = src.read(BLOCK)
        if len(hb) < BLOCK or hb == _ZERO:
            while src.read(_CHUNK):  # drain the trailer so git exits cleanly
                pass
            return
        if hb[257:262] != b"ustar":
            raise PackagingError(f"{what}: unexpected data in the tar stream (not a ustar header)")
        kind = hb[156:157]
        size = _number(hb[124:136])
        padded = -size % BLOCK + size
        if kind in (b"x", b"g", b"L", b"K"):
            data = _read_exact(src, padded, what)
            out.write(hb)
            out.write(data)
            if kind == b"x":
                pax = _pax_records(data[:size])
            elif kind == b"L":
                long_name = data[:size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif kind == b"K":
                long_link = data[:size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        name = pax.get("path") or long_name or _header_name(hb)
        if "size" in pax:
            size = int(pax["size"])
            padded = -size % BLOCK + size
        out.write(hb)
        if kind in (b"0", b"\0", b"7"):
            mode = MODE_EXEC if _number(hb[100:108]) & 0o100 else MODE_FILE
            entries.append(Entry(name, mode, size, _copy_hashed(src, out, size, padded, what)))
        elif kind == b"2":
            target = pax.get("linkpath") or long_link or _cstr(hb[157:257])
            entries.append(Entry(name, MODE_LINK, len(target.encode()), blob_oid(target.encode("utf-8", "surrogateescape"))))
            links.append((name, target))
            _copy_hashed(src, out, 0, padded, what)
        elif kind == b"5":
            _copy_hashed(src, out, 0, padded, what)
        else:
            raise PackagingError(f"{what}: unsupported tar member type {kind!r} for {name!r}")
        pax, long_name, long_link = {}, None, None


def trailer(out: Writer) -> None:
    """The end-of-archive marker: two zero blocks."""
    out.write(_ZERO * 2)


def _copy_hashed(src: IO[bytes], out: Writer, size: int, padded: int, what: str) -> str:
    """Forward ``padded`` bytes, hashing the first ``size`` as a git blob; returns its oid."""
    h = blob_hasher(size)
    left_content, left = size, padded
    while left:
        chunk = src.read(min(left, _CHUNK))
        if not chunk:
            raise PackagingError(f"{what}: the tar stream ended in the middle of a file")
        if left_content:
            n = min(left_content, len(chunk))
            h.update(chunk if n == len(chunk) else memoryview(chunk)[:n])
            left_content -= n
        out.write(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _read_exact(src: IO[bytes], n: int, what: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise PackagingError(f"{what}: the tar stream ended in the middle of a header")
    return data


def _number(field: bytes) -> int:
    """A tar numeric field: octal text, or GNU base-256 when the high bit is set."""
    if field and field[0] & 0x80:
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.rstrip(b"\0 ").lstrip(b" ")
    return int(text, 8) if text else 0


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _header_name(hb: bytes) -> str:
    name, prefix = _cstr(hb[0:100]), _cstr(hb[345:500])
    return f"{prefix}/{name}" if prefix else name


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse ``"<len> key=value\\n"`` records."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out
