"""Lines that fit the terminal: cut at its width with an ellipsis, never wrapped.

A wrapped line breaks a table's columns and makes a live view scroll; a cut one keeps its
start (the point, its state) and says it was cut. Output that is not a terminal (a file, a
pipe, CI) is not cut unless COLUMNS asks for a width: a log keeps every character.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import IO, Optional

ELLIPSIS = "…"


def width(stream: Optional[IO[str]] = None, env_too: bool = True) -> Optional[int]:
    """Columns to fit, or None for no limit: the terminal's width when `stream` (default
    stdout) is one, else $COLUMNS when set and `env_too`. A live view passes env_too=False:
    GNU readline exports COLUMNS=80 to the children of any Python that loaded it (pytest,
    IPython), so $COLUMNS alone does not mean a person reads a terminal that narrow."""
    stream = stream if stream is not None else sys.stdout
    env = os.environ.get("COLUMNS", "") if env_too else ""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return shutil.get_terminal_size((80, 24)).columns  # $COLUMNS first, then the terminal
    return int(env) if env.isdigit() and int(env) > 0 else None


def fit(line: str, columns: Optional[int]) -> str:
    """`line` cut to `columns` characters, its last one an ellipsis when something was cut."""
    if columns is None or len(line) <= columns:
        return line
    return line[: max(0, columns - 1)] + ELLIPSIS if columns > 0 else ""


def fit_lines(text: str, stream: Optional[IO[str]] = None) -> str:
    """Every line of `text` cut to the width of `stream` (the one-call form for a printer)."""
    columns = width(stream)
    if columns is None:
        return text
    return "\n".join(fit(line, columns) for line in text.split("\n"))
