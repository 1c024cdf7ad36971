"""What the user sees while a sweep runs: a live table on a terminal, one line per change otherwise.

Each point is shown by what tells it apart (its swept values, nrun_core.swept), never by the
overrides every point shares; lines and the table are cut to the terminal's width, not wrapped.
Points' own output, when streamed (nrun_core.livelogs), comes through ``output``, prefixed by
the point, above the table or between the lines.

The table never starts a refresh thread (rich's auto_refresh is off): the runner redraws it from
its own loop, so forking a point never races a thread holding the terminal's lock.

Both scale with changes, not points: a change updates counts by state and a short list of
recent rows in O(1); the table is redrawn on a timer (at most 4 times a second) from those, and
on more than SMALL points the line view prints failures and retries as they happen but sums
up everything else in one progress line every PROGRESS_EVERY_S seconds (10,000 points would
otherwise print 20,000 lines of "queued" and "completed").
"""

from __future__ import annotations

import heapq
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from nrun_core.store import COMPLETED, PENDING, RUNNING, TERMINAL
from nrun_core.termfit import fit, width

_STYLE = {"COMPLETED": "green", "FAILED": "red", "TIMEOUT": "red", "LOST": "red",
          "CANCELLED": "yellow", "RUNNING": "cyan", "QUEUED": "blue", "PENDING": "dim"}


# Colors of the points' prefixes in streamed output, by point number (red is kept for failures)
_PREFIX_COLORS = ("cyan", "yellow", "green", "magenta", "blue", "bright_cyan", "bright_yellow",
                  "bright_green", "bright_magenta", "bright_blue")
_ANSI = {"cyan": "36", "yellow": "33", "green": "32", "magenta": "35", "blue": "34", "bright_cyan": "96",
         "bright_yellow": "93", "bright_green": "92", "bright_magenta": "95", "bright_blue": "94"}


@dataclass
class Row:
    idx: int
    label: str                 # the point's swept values, e.g. "lr=0.1 batch=64"
    state: str = PENDING
    started: Optional[float] = None
    ended: Optional[float] = None
    detail: str = ""
    attempt: int = 0
    values: Dict[str, str] = field(default_factory=dict)  # swept key → value: the table's columns

    def elapsed(self) -> str:
        if self.started is None:
            return ""
        return f"{(self.ended or time.time()) - self.started:.1f}s"


SMALL = 50               # sweeps up to this many points get one line per change
PROGRESS_EVERY_S = 10.0  # larger ones: one progress line at most this often
RECENT = 64              # rows remembered as recently changed, for the table
_ORDER = {RUNNING: 0, "FAILED": 1, "TIMEOUT": 1, "LOST": 1, "CANCELLED": 2, "QUEUED": 3, PENDING: 3,
          COMPLETED: 4}


class View:
    def __init__(self, sweep_id: str, rows: Dict[int, Row]) -> None:
        self.sweep_id, self.rows = sweep_id, rows

    def changed(self, row: Row) -> None: ...
    def tick(self) -> None: ...
    def close(self) -> None: ...
    def message(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def output(self, lines: Sequence[Tuple[str, str, bool, int]]) -> None:
        """Lines of the points' own output, each (prefix, line, from stderr?, color number):
        a point's stdout to ours, its stderr to ours."""
        out, err_out = sys.stdout, sys.stderr
        colored = {out: _colored(out), err_out: _colored(err_out)}
        for prefix, line, err, n in lines:
            stream = err_out if err else out
            if colored[stream]:
                prefix = f"\x1b[{_ANSI[_PREFIX_COLORS[n % len(_PREFIX_COLORS)]]}m{prefix}\x1b[0m"
            stream.write(f"{prefix} {line}\n")
        out.flush()
        err_out.flush()


class QuietView(View):
    def message(self, text: str) -> None:
        pass


class Tally:
    """Counts by state and the recently changed rows, kept up to date change by change."""

    def __init__(self, rows: Dict[int, Row]) -> None:
        self.rows = rows
        self.recount()

    def recount(self) -> None:
        """From the rows themselves (at the start, and at the end: the runner settles some rows
        without a change, e.g. at a cancel): one pass over every point."""
        self.state = {idx: r.state for idx, r in self.rows.items()}
        self.counts: Dict[str, int] = {}
        for s in self.state.values():
            self.counts[s] = self.counts.get(s, 0) + 1
        # running or failed: always worth showing
        self.active: Dict[int, Row] = {i: r for i, r in self.rows.items() if _ORDER.get(r.state, 5) <= 1}
        latest = heapq.nlargest(RECENT, self.rows.values(), key=lambda r: (r.ended or 0.0, -r.idx))
        self.recent: "OrderedDict[int, Row]" = OrderedDict((r.idx, r) for r in reversed(latest))

    def changed(self, row: Row) -> None:
        old = self.state.get(row.idx)
        if old is not None:
            self.counts[old] -= 1
            if not self.counts[old]:
                del self.counts[old]
        self.state[row.idx] = row.state
        self.counts[row.state] = self.counts.get(row.state, 0) + 1
        self.recent.pop(row.idx, None)
        self.recent[row.idx] = row
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        if _ORDER.get(row.state, 5) <= 1:
            self.active[row.idx] = row
        else:
            self.active.pop(row.idx, None)

    def summary(self) -> str:
        return ", ".join(f"{s.lower()} {n}" for s, n in sorted(self.counts.items(), key=lambda kv: _ORDER.get(kv[0], 5)))

    def candidates(self) -> List[Row]:
        """The rows a bounded view picks from: running, failed and recently changed ones."""
        if len(self.rows) <= RECENT:
            return list(self.rows.values())
        picked = dict(self.recent)
        for idx, r in self.active.items():
            if len(picked) >= 4 * RECENT:
                break
            picked[idx] = r
        return list(picked.values())


class LinesView(View):
    def __init__(self, sweep_id: str, rows: Dict[int, Row]) -> None:
        super().__init__(sweep_id, rows)
        self.small = len(rows) <= SMALL
        self.tally = None if self.small else Tally(rows)
        self._next = time.monotonic() + PROGRESS_EVERY_S
        self._said = ""

    def changed(self, row: Row) -> None:
        if self.tally is not None:
            self.tally.changed(row)
        if row.state == PENDING and row.attempt == 0:
            return
        if self.small or row.state in TERMINAL - {COMPLETED} or row.state == PENDING:  # failures, retries
            self._line(row)
        else:
            self.tick()

    def tick(self) -> None:
        if self.tally is not None and time.monotonic() >= self._next:
            self._progress()

    def close(self) -> None:
        if self.tally is not None:
            self.tally.recount()  # rows the runner settled without a change (e.g. at a cancel)
            self._progress()

    def _line(self, row: Row) -> None:
        tail = f" {row.elapsed()}" if row.state in TERMINAL else ""
        label = f" ({row.label})" if row.label else ""
        detail = f": {row.detail}" if row.detail else ""
        print(fit(f"[nrun {self.sweep_id}] #{row.idx} {row.state}{tail}{label}{detail}", width(sys.stderr, env_too=False)),
              file=sys.stderr, flush=True)

    def _progress(self) -> None:
        self._next = time.monotonic() + PROGRESS_EVERY_S
        assert self.tally is not None
        text = self.tally.summary()
        if text == self._said:
            return
        self._said = text
        done = sum(n for s, n in self.tally.counts.items() if s in TERMINAL)
        print(fit(f"[nrun {self.sweep_id}] {done}/{len(self.rows)} done: {text}", width(sys.stderr, env_too=False)),
              file=sys.stderr, flush=True)


class TableView(View):
    MAX_ROWS = 24
    REDRAW_S = 0.25
    MAX_KEY_COLUMNS = 6   # more swept keys than this: one column with all of them

    def __init__(self, sweep_id: str, rows: Dict[int, Row], keys: Sequence[str] = (), console=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(sweep_id, rows)
        from rich.console import Console
        from rich.live import Live

        self.tally = Tally(rows)
        self._idx_width = len(str(max(rows, default=0)))  # once: a redraw never goes over every row
        self.keys = list(keys) if 0 < len(keys) <= self.MAX_KEY_COLUMNS else []
        self.console = console if console is not None else Console(stderr=True)
        self.live = Live(self._table(), console=self.console, auto_refresh=False, transient=False)
        self.live.start()
        self._last = time.monotonic()
        self._dirty = False

    def changed(self, row: Row) -> None:
        self.tally.changed(row)
        self._dirty = True
        self.tick()

    def tick(self) -> None:
        """Redraw, at most every REDRAW_S: running rows' clocks move even when nothing changed."""
        now = time.monotonic()
        if now - self._last >= self.REDRAW_S and (self._dirty or self.tally.counts.get(RUNNING)):
            self._last, self._dirty = now, False
            self.live.update(self._table(), refresh=True)

    def close(self) -> None:
        self.tally.recount()
        self.live.update(self._table(), refresh=True)
        self.live.stop()

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, overflow="ellipsis", no_wrap=True, crop=True)

    def output(self, lines: Sequence[Tuple[str, str, bool, int]]) -> None:
        """Above the table (rich's Live keeps it at the bottom), the points' own text as is; one
        print per batch: each print draws the table again."""
        from rich.text import Text

        text = Text()
        for i, (prefix, line, _err, n) in enumerate(lines):
            text.append(("\n" if i else "") + prefix + " ", style=_PREFIX_COLORS[n % len(_PREFIX_COLORS)])
            text.append_text(Text.from_ansi(line))
        self.console.print(text, highlight=False)

    def _table(self):  # type: ignore[no-untyped-def]
        from rich.table import Table
        from rich.text import Text

        counts = self.tally.counts
        title = Text.assemble(f"nrun sweep {self.sweep_id}  ", *[
            (f" {s.lower()} {n}", _STYLE.get(s, "")) for s, n in sorted(counts.items())],
            no_wrap=True, overflow="ellipsis")
        table = Table(title=title, title_justify="left", expand=False)
        shown = _pick_rows(self.tally.candidates(), self.MAX_ROWS)
        cells = {r.idx: [r.values.get(k, "") for k in self.keys] if self.keys else [r.label] for r in shown}
        widths = _column_widths(self.console.width, self._idx_width,
                                [max([len(k), *(len(c[i]) for c in cells.values())])
                                 for i, k in enumerate(self.keys or ["point"])],
                                max([6, *(len(r.detail) for r in shown)]))
        for col, w in zip(("#", *(self.keys or ["point"]), "state", "time", "detail"), widths):
            # every cell on one line, cut with an ellipsis: the table never wraps at any width
            table.add_column(col, overflow="ellipsis", no_wrap=True, width=w,
                             justify="right" if col in ("#", "time") else "left")
        for r in shown:
            style = _STYLE.get(r.state, "")
            table.add_row(str(r.idx), *cells[r.idx], f"[{style}]{r.state}[/]", r.elapsed(), r.detail)
        hidden = len(self.rows) - len(shown)
        if hidden:
            table.caption = f"... and {hidden} more (nrun status {self.sweep_id})"
        return table


def _column_widths(total: int, idx_width: int, natural: List[int], detail_natural: int = 60) -> List[int]:
    """Widths of #, the point's columns, state, time and detail that fill at most `total`
    columns: #, state and time whole; the point's columns their natural width, cut evenly when
    they do not fit; detail whatever is left (at least a few characters)."""
    fixed = [max(1, idx_width), 9, 7]
    overhead = 3 * (len(natural) + 4) + 1  # a space each side of each cell, and the borders
    room = max(0, total - overhead - sum(fixed) - 12)  # 12: the least detail worth a column
    keys = list(natural)
    while sum(keys) > room and max(keys) > 3:
        widest = keys.index(max(keys))
        keys[widest] -= max(1, (sum(keys) - room) // len(keys))
        keys[widest] = max(3, keys[widest])
    detail = max(3, min(60, detail_natural, total - overhead - sum(fixed) - sum(keys)))
    return [fixed[0], *keys, fixed[1], fixed[2], detail]


def _pick_rows(rows: List[Row], limit: int) -> List[Row]:
    """Running first, then failures, then the most recent others: what a user wants to see."""
    if len(rows) <= limit:
        return sorted(rows, key=lambda r: r.idx)
    picked = sorted(rows, key=lambda r: (_ORDER.get(r.state, 5), -(r.ended or 0), r.idx))[:limit]
    return sorted(picked, key=lambda r: r.idx)


def make_view(kind: str, sweep_id: str, rows: Dict[int, Row], keys: Sequence[str] = ()) -> View:
    """`keys`: the swept keys, a column each in the table."""
    if kind == "auto":
        kind = "table" if sys.stderr.isatty() else "lines"
    if kind == "table":
        return TableView(sweep_id, rows, keys)
    if kind == "lines":
        return LinesView(sweep_id, rows)
    return QuietView(sweep_id, rows)


def _colored(stream) -> bool:  # type: ignore[no-untyped-def]
    """ANSI colors on a terminal, unless NO_COLOR (no-color.org) says otherwise."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
