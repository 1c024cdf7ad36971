"""Shell lines built from argv lists: every word quoted, so user input is never interpreted."""

from __future__ import annotations

import shlex
from typing import Iterable, Mapping


def join(argv: Iterable[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def exports(env: Mapping[str, str]) -> str:
    """`export K=V` lines; names are checked, values quoted."""
    lines = []
    for key, value in env.items():
        if not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise ValueError(f"not a valid environment variable name: {key!r}")
        lines.append(f"export {key}={shlex.quote(str(value))}")
    return "\n".join(lines)
