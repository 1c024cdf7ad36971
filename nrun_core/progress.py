"""What the user sees while a sweep runs: a live table on a terminal, one line per change otherwise.

The table never starts a refresh thread (rich's auto_refresh is off): the runner redraws it from
its own loop, so forking a point never races a thread holding the terminal's lock.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from nrun_core.store import COMPLETED, PENDING, RUNNING, TERMINAL

_STYLE = {"COMPLETED": "green", "FAILED": "red", "TIMEOUT": "red", "LOST": "red",
          "CANCELLED": "yellow", "RUNNING": "cyan", "QUEUED": "blue", "PENDING": "dim"}


@dataclass
class Row:
    idx: int
    overrides: str
    state: str = PENDING
    started: Optional[float] = None
    ended: Optional[float] = None
    detail: str = ""
    attempt: int = 0

    def elapsed(self) -> str:
        if self.started is None:
            return ""
        return f"{(self.ended or time.time()) - self.started:.1f}s"


class View:
    def __init__(self, sweep_id: str, rows: Dict[int, Row]) -> None:
        self.sweep_id, self.rows = sweep_id, rows

    def changed(self, row: Row) -> None: ...
    def tick(self) -> None: ...
    def close(self) -> None: ...
    def message(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


class QuietView(View):
    def message(self, text: str) -> None:
        pass


class LinesView(View):
    def changed(self, row: Row) -> None:
        if row.state == PENDING and row.attempt == 0:
            return
        tail = f" {row.elapsed()}" if row.state in TERMINAL else ""
        detail = f": {row.detail}" if row.detail else ""
        print(f"[nrun {self.sweep_id}] #{row.idx} {row.state}{tail} ({row.overrides}){detail}",
              file=sys.stderr, flush=True)


class TableView(View):
    MAX_ROWS = 24

    def __init__(self, sweep_id: str, rows: Dict[int, Row]) -> None:
        super().__init__(sweep_id, rows)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.live = Live(self._table(), console=self.console, auto_refresh=False, transient=False)
        self.live.start()
        self._last = 0.0

    def changed(self, row: Row) -> None:
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last > 0.25:
            self._last = now
            self.live.update(self._table(), refresh=True)

    def close(self) -> None:
        self.live.update(self._table(), refresh=True)
        self.live.stop()

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def _table(self):  # type: ignore[no-untyped-def]
        from rich.table import Table

        counts: Dict[str, int] = {}
        for r in self.rows.values():
            counts[r.state] = counts.get(r.state, 0) + 1
        summary = "  ".join(f"[{_STYLE.get(s, '')}]{s.lower()} {n}[/]" for s, n in sorted(counts.items()))
        table = Table(title=f"nrun sweep {self.sweep_id}   {summary}", title_justify="left",
                      expand=False)
        for col in ("#", "overrides", "state", "time", "detail"):
            table.add_column(col, overflow="fold" if col == "overrides" else "ellipsis",
                             max_width=60 if col in ("overrides", "detail") else None)
        shown = _pick_rows(list(self.rows.values()), self.MAX_ROWS)
        for r in shown:
            style = _STYLE.get(r.state, "")
            table.add_row(str(r.idx), r.overrides, f"[{style}]{r.state}[/]", r.elapsed(), r.detail)
        hidden = len(self.rows) - len(shown)
        if hidden:
            table.caption = f"... and {hidden} more (nrun status {self.sweep_id})"
        return table


def _pick_rows(rows: List[Row], limit: int) -> List[Row]:
    """Running first, then failures, then the most recent others: what a user wants to see."""
    if len(rows) <= limit:
        return rows
    order = {RUNNING: 0, "FAILED": 1, "TIMEOUT": 1, "LOST": 1, "CANCELLED": 2, "QUEUED": 3, PENDING: 3,
             COMPLETED: 4}
    picked = sorted(rows, key=lambda r: (order.get(r.state, 5), -(r.ended or 0), r.idx))[:limit]
    return sorted(picked, key=lambda r: r.idx)


def make_view(kind: str, sweep_id: str, rows: Dict[int, Row]) -> View:
    if kind == "auto":
        kind = "table" if sys.stderr.isatty() else "lines"
    if kind == "table":
        return TableView(sweep_id, rows)
    if kind == "lines":
        return LinesView(sweep_id, rows)
    return QuietView(sweep_id, rows)
