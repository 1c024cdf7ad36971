"""`nrun results`: a sweep's swept parameters against what each point returned, as one table.

Read from the store alone (no result file, no backend): the points' overrides give the swept
parameters (only those that differ between points), ``value_repr`` gives the returned value
(parsed back into numbers, lists and dicts where it is a Python literal), ``usage`` what each
point used. The same rows feed the terminal table, CSV, JSON and `nrun plot`.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, TextIO

from nrun_core import termfit
from nrun_core.errors import ConfigError
from nrun_core.swept import Swept, key

FORMATS = ("table", "csv", "json")
USAGE_COLUMNS = ("wall_s", "cpu_s", "max_rss", "gpu_mem")
BYTES_COLUMNS = frozenset({"max_rss", "gpu_mem"})
MIN_TEXT_WIDTH = 8  # a text column squeezed to fit the terminal keeps at least this much
_SCALAR = (int, float, str, bool, type(None))


class Results:
    """One row per point: ``columns`` in display order, each row a dict column → typed value
    (None where the point has nothing, e.g. no value because it failed)."""

    def __init__(self, sweep: Dict[str, Any], params: List[str], values: List[str],
                 columns: List[str], rows: List[Dict[str, Any]]) -> None:
        self.sweep, self.params, self.values, self.columns, self.rows = sweep, params, values, columns, rows

    def column(self, name: str) -> str:
        """The column a user means by NAME (a dict return's key also answers to `value.KEY`)."""
        for candidate in (name, f"value.{name}", name[len("value."):] if name.startswith("value.") else None):
            if candidate in self.columns:
                return candidate
        raise ConfigError(f"sweep {self.sweep['id']} has no column {name!r}; choose one of: "
                          f"{', '.join(self.columns)} (prefix '-' to sort descending, e.g. --sort -value)")

    def numeric(self, name: str) -> bool:
        """True when every value the column holds is a number (blanks aside) and it holds one."""
        seen = [r[name] for r in self.rows if r.get(name) is not None]
        return bool(seen) and all(_is_number(v) for v in seen)


def load(store: Any, sweep: Dict[str, Any]) -> Results:
    """The results of a sweep as the store holds them now."""
    points = store.points(sweep["id"])
    parsed = [_overrides(p["overrides"] or []) for p in points]
    swept = Swept()  # the same notion of "swept" as the progress view's labels
    for p in points:
        swept.add(p["overrides"] or [])
    params = swept.keys()
    returned = [parse_value(p["value_repr"]) if p["state"] == "COMPLETED" else None for p in points]
    flat = [v for v in returned if v is not None]
    as_dict = bool(flat) and all(isinstance(v, dict) and all(isinstance(x, _SCALAR) for x in v.values())
                                 for v in flat)
    taken = {"point", *params, "state", "error", *USAGE_COLUMNS}
    if as_dict:
        keys: Dict[str, str] = {}  # the dict's key → its column
        for v in flat:
            for k in v:
                keys.setdefault(k, f"value.{k}" if str(k) in taken else str(k))
        values = list(keys.values())
    else:
        keys, values = {}, ["value"]
    usage_cols = [c for c in USAGE_COLUMNS if any((p.get("usage") or {}).get(c) is not None for p in points)
                  or c == "wall_s"]
    rows = []
    for p, over, ret in zip(points, parsed, returned):
        row: Dict[str, Any] = {"point": p["idx"]}
        row.update({k: over.get(k) for k in params})
        if as_dict:
            row.update({col: (ret or {}).get(k) for k, col in keys.items()})
        else:
            row["value"] = ret
        row["state"] = p["state"]
        usage = p.get("usage") or {}
        for c in usage_cols:
            row[c] = usage.get(c)
        if row.get("wall_s") is None and p.get("started"):  # no usage recorded (yet): the clock's
            end = p.get("ended") or (time.time() if p["state"] == "RUNNING" else None)
            row["wall_s"] = round(end - p["started"], 3) if end else None
        row["error"] = _first_line(p.get("error")) if p["state"] != "COMPLETED" else None
        rows.append(row)
    columns = ["point", *params, *values, "state", *usage_cols]
    if any(r["error"] for r in rows):
        columns.append("error")
    return Results(sweep, params, values, columns, rows)


def parse_value(text: Optional[str]) -> Any:
    """A returned value from its repr: Python literals come back as themselves (1.5, 'adam',
    {'loss': 0.3}, nan), a number or list of numbers in a library's wrapper (np.float64(0.5),
    tensor(0.25, device='cuda:0'), array([1, 2])) as the number or list, anything else as its
    repr text. Nothing is evaluated: the repr's syntax tree is read, literal by literal."""
    if text is None:
        return None
    try:
        return _literal(ast.parse(text.strip(), mode="eval").body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


_SPECIAL_FLOATS = {"nan": math.nan, "NaN": math.nan, "inf": math.inf, "Infinity": math.inf}


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand)
        if _is_number(v):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Name) and node.id in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)) and len(node.args) == 1:
        v = _literal(node.args[0])  # np.float64(0.5), tensor(0.25, device=...): the number inside
        if _is_number(v) or (isinstance(v, list) and all(_is_number(x) for x in v)):
            return v
    raise ValueError("not a literal")


def sort(res: Results, key: str) -> None:
    """Sort the rows by a column, '-COLUMN' for descending: numbers as numbers, text as text
    (numbers first where a column holds both); a point without the value always comes last."""
    desc = key.startswith("-")
    col = res.column(key[1:] if desc else key)
    have = [r for r in res.rows if not _blank(r.get(col))]
    blank = [r for r in res.rows if _blank(r.get(col))]
    have.sort(key=lambda r: _sort_key(r[col]), reverse=desc)
    res.rows = have + blank


def write(res: Results, fmt: str, out: TextIO, width: Optional[int] = None) -> None:
    """The results as a table (squeezed to `width` columns when given), CSV or JSON."""
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(res.columns)
        for r in res.rows:
            w.writerow(["" if r.get(c) is None else _csv_cell(r[c]) for c in res.columns])
    elif fmt == "json":
        doc = {"sweep": res.sweep["id"], "name": res.sweep.get("name"), "executor": res.sweep.get("executor"),
               "params": res.params, "values": res.values, "columns": res.columns,
               "points": [{c: _json_safe(r.get(c)) for c in res.columns} for r in res.rows]}
        json.dump(doc, out, indent=2, default=repr)
        out.write("\n")
    elif fmt == "table":
        out.write(table(res, width))
    else:
        raise ConfigError(f"unknown format {fmt!r}; use --format {'|'.join(FORMATS)}")


def format_for(path: Optional[str], fmt: Optional[str]) -> str:
    """--format as given, else from -o's suffix (.csv, .json), else the table."""
    if fmt:
        return fmt
    suffix = os.path.splitext(path or "")[1].lower().lstrip(".")
    return suffix if suffix in ("csv", "json") else "table"


def terminal_width() -> Optional[int]:
    """Columns to fit: the terminal's; to a pipe or file, $COLUMNS if set, else no limit
    (nothing is cut there: it may be grepped)."""
    return termfit.width(sys.stdout)


def table(res: Results, width: Optional[int] = None) -> str:
    """Aligned columns, numbers right-aligned; text cells cut (ending in '…') so that a line fits
    `width`, the widest first, none below MIN_TEXT_WIDTH."""
    numeric = {c: c in BYTES_COLUMNS or c == "point" or res.numeric(c) for c in res.columns}
    cells = [[_cell(c, r.get(c)) for c in res.columns] for r in res.rows]
    header = [c if c != "point" else "#" for c in res.columns]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(header)]
    if width:
        squeezable = [i for i, c in enumerate(res.columns) if not numeric[c] and c != "state"]
        over = sum(widths) + 2 * (len(widths) - 1) - width
        while over > 0:
            i = max(squeezable, key=lambda j: widths[j], default=None)
            if i is None or widths[i] <= max(MIN_TEXT_WIDTH, min(len(header[i]), MIN_TEXT_WIDTH)):
                break
            cut = min(over, widths[i] - MIN_TEXT_WIDTH)
            widths[i] -= cut
            over -= cut
    lines = []
    for row in [header, *cells]:
        parts = []
        for i, (text, w) in enumerate(zip(row, widths)):
            text = termfit.fit(text, w)
            parts.append(text.rjust(w) if numeric[res.columns[i]] else text.ljust(w))
        lines.append("  ".join(parts).rstrip())
    if not res.rows:
        lines.append(f"(sweep {res.sweep['id']} has no points)")
    return "\n".join(lines) + "\n"


# -- helpers ------------------------------------------------------------------------------
def _overrides(items: Sequence[str]) -> Dict[str, Any]:
    """Hydra overrides of one point as key → value ('lr=0.1' → {'lr': 0.1}; keys as swept.key
    reads them), a deletion ('~name') as the value 'deleted'."""
    out: Dict[str, Any] = {}
    for item in items:
        _, eq, raw = item.partition("=")
        out[key(item)] = _override_value(raw) if eq else "deleted"
    return out


def _override_value(raw: str) -> Any:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return _number(raw) if _NUMBER.match(raw) else raw


_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _first_line(text: Optional[str]) -> Optional[str]:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[0] if lines else None


def _blank(v: Any) -> bool:
    """No value to sort by: none, or NaN (a diverged run), which sorts with the blanks."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _json_safe(v: Any) -> Any:
    """NaN and infinities as null: strict JSON (jq, JavaScript) has no such numbers."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sort_key(v: Any) -> Any:
    if _is_number(v):
        return (0, v, "")
    return (1, 0, v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=repr))


def _csv_cell(v: Any) -> Any:
    return v if isinstance(v, (int, float, str)) else json.dumps(v, default=repr)


def _cell(col: str, v: Any) -> str:
    if v is None:
        return ""
    if col in BYTES_COLUMNS and _is_number(v):
        from nrun_core.runner import human_bytes

        return human_bytes(v)
    if col in ("wall_s", "cpu_s") and _is_number(v):
        return f"{v:.1f}"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return v.replace("\n", " ")
    return str(v) if _is_number(v) or isinstance(v, bool) else json.dumps(v, default=repr)


def render(res: Results, fmt: str, width: Optional[int] = None) -> str:
    """write() into a string."""
    buf = io.StringIO()
    write(res, fmt, buf, width)
    return buf.getvalue()
