"""`nrun plot`: a sweep's value against each swept parameter, and a timeline of its points.

The timeline has one bar per point: light from the moment it was recorded (queued, at nrun or at
the backend) to its start, solid while it ran, colored by where it ran, so queueing and idle
capacity show at a glance. matplotlib is an optional extra, imported only here, with the Agg
backend (no display needed).
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Tuple

from nrun_core.errors import ConfigError
from nrun_core.results import Results

INSTALL = "pip install 'hydra-nrun[plot]'"
PANELS_PER_ROW = 3
FAILED_COLOR = "#d62728"


def matplotlib_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(f"nrun plot needs matplotlib, which is not installed here; fix: {INSTALL}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def value_column(res: Results, wanted: Optional[str]) -> Optional[str]:
    """The returned value to plot: WANTED, else `value`, else a dict return's first numeric key;
    None when the points returned no number (then only the timeline is drawn)."""
    if wanted:
        col = res.column(wanted)
        if not res.numeric(col):
            raise ConfigError(f"column {col!r} of sweep {res.sweep['id']} holds no numbers to plot; "
                              f"choose one of: {', '.join(c for c in res.values if res.numeric(c)) or '(none)'}")
        return col
    return next((c for c in res.values if res.numeric(c)), None)


def timeline(store: Any, sweep: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per point: when it was recorded, started and ended (seconds since the sweep was created),
    where it ran and its state. One query for all events of the sweep."""
    t0 = sweep["created"]
    first: Dict[int, float] = {}
    for ev in store.events(sweep["id"]):
        first.setdefault(ev["idx"], ev["time"])
    out = []
    for p in store.points(sweep["id"]):
        rec = first.get(p["idx"], t0)
        end = p.get("ended") or (time.time() if p.get("started") and p["state"] == "RUNNING" else None)
        out.append({"point": p["idx"], "recorded": rec - t0,
                    "started": p["started"] - t0 if p.get("started") else None,
                    "ended": end - t0 if end else None,
                    "where": where(sweep, p), "state": p["state"]})
    return out


def where(sweep: Dict[str, Any], point: Dict[str, Any]) -> str:
    """Where a point ran, as far as the store knows: an SSH point's hosts, else the executor."""
    bid = point.get("backend_id") or ""
    if sweep.get("executor") == "ssh" and "/" in bid:
        return bid.rsplit("/", 1)[0]
    return sweep.get("executor") or "?"


def figure(store: Any, sweep: Dict[str, Any], res: Results, value: Optional[str] = None) -> Any:
    """The matplotlib Figure: one panel per swept parameter (value against it), the timeline below."""
    plt = matplotlib_pyplot()
    col = value_column(res, value)
    params = res.params if col else []
    bars = timeline(store, sweep)
    ncols = max(1, min(PANELS_PER_ROW, len(params)))
    nrows = math.ceil(len(params) / ncols) if params else 0
    timeline_h = min(8.0, max(2.0, 0.22 * len(bars) + 1.2))
    fig = plt.figure(figsize=(max(8.0, 4.0 * ncols), 3.2 * nrows + timeline_h + 0.8))
    grid = fig.add_gridspec(nrows + 1, ncols, height_ratios=[3.2] * nrows + [timeline_h])
    for i, name in enumerate(params):
        _value_panel(fig.add_subplot(grid[i // ncols, i % ncols]), res, name, col)
    _timeline_panel(fig.add_subplot(grid[nrows, :]), bars)
    title = f"sweep {sweep['id']}" + (f" ({sweep['name']})" if sweep.get("name") else "")
    title += f" on {sweep.get('executor')}: {len(res.rows)} points"
    if not col:
        title += " (no numeric value returned: timeline only)"
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(fig: Any, path: str) -> None:
    fig.savefig(path, format="png", dpi=110)
    matplotlib_pyplot().close(fig)


def _value_panel(ax: Any, res: Results, param: str, col: str) -> None:
    pts = [(r[param], r[col]) for r in res.rows if r.get(col) is not None and r.get(param) is not None]
    if res.numeric(param):
        xs = [float(x) for x, _ in pts]
        ax.scatter(xs, [y for _, y in pts], alpha=0.75)
        positive = [x for x in xs if x > 0]
        if positive and len(positive) == len(xs) and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")  # learning rates, batch sizes: a decade per step reads better
        elif all(isinstance(x, int) for x, _ in pts) and len({x for x, _ in pts}) <= 12:
            ax.set_xticks(sorted({x for x, _ in pts}))  # seeds, layer counts: no 1.25 ticks
    else:
        cats = _categories([r[param] for r in res.rows if r.get(param) is not None])
        pos = {c: i for i, c in enumerate(cats)}
        ax.scatter([pos[str(x)] for x, _ in pts], [y for _, y in pts], alpha=0.75)
        ax.set_xticks(range(len(cats)), cats, rotation=30 if max(map(len, cats), default=0) > 6 else 0)
        ax.set_xlim(-0.5, len(cats) - 0.5)
    ax.set_xlabel(param)
    ax.set_ylabel(col)
    ax.set_title(f"{col} vs {param}", fontsize=10)
    ax.grid(True, alpha=0.3)


def _timeline_panel(ax: Any, bars: List[Dict[str, Any]]) -> None:
    import matplotlib
    from matplotlib.collections import PolyCollection

    places = sorted({b["where"] for b in bars})
    cycle = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
    color = {w: cycle[i % len(cycle)] for i, w in enumerate(places)}
    failed = any(b["state"] not in _NOT_FAILED for b in bars)
    for w in places:  # one collection per place and kind: thousands of points draw in a second
        mine = [b for b in bars if b["where"] == w]
        waits = [_box(b["point"], b["recorded"], _start(b)) for b in mine
                 if _start(b) is not None and _start(b) > b["recorded"]]
        ran = [b for b in mine if b["started"] is not None]
        runs = [_box(b["point"], b["started"], max(b["ended"] or b["started"], b["started"] + 1e-3)) for b in ran]
        ax.add_collection(PolyCollection(waits, facecolors=color[w], edgecolors="none", alpha=0.25,
                                         label=f"_waiting {w}"))
        ax.add_collection(PolyCollection(runs, facecolors=color[w], linewidths=1.5, label=f"_running {w}",
                                         edgecolors=[FAILED_COLOR if b["state"] not in _NOT_FAILED else "none"
                                                     for b in ran]))
    import matplotlib.patches as mpatches

    handles = [mpatches.Patch(color=color[w], label=f"ran on {w}") for w in places]
    handles.append(mpatches.Patch(color="grey", alpha=0.25, label="waiting (queued)"))
    if failed:
        handles.append(mpatches.Patch(facecolor="white", edgecolor=FAILED_COLOR, label="did not complete"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_xlabel("seconds since the sweep started")
    ax.set_ylabel("point")
    ax.set_title("timeline: waiting (light) and running (solid), by where each point ran", fontsize=10)
    if bars:
        ax.set_ylim(max(b["point"] for b in bars) + 0.6, min(b["point"] for b in bars) - 0.6)
        if len(bars) <= 30:
            ax.set_yticks([b["point"] for b in bars])
        last = max([x for b in bars for x in (b["ended"], b["started"], b["recorded"]) if x is not None] or [1.0])
        ax.set_xlim(0, last * 1.02 or 1.0)
    ax.grid(True, axis="x", alpha=0.3)


_NOT_FAILED = frozenset({"COMPLETED", "RUNNING", "QUEUED", "PENDING"})


def _start(b: Dict[str, Any]) -> Optional[float]:
    """When a point stopped waiting: its start, or its end if it never started (cancelled)."""
    return b["started"] if b["started"] is not None else b["ended"]


def _box(y: int, start: float, end: float) -> List[Tuple[float, float]]:
    """A bar's corners: from start to end, on the row of point y."""
    return [(start, y - 0.35), (start, y + 0.35), (end, y + 0.35), (end, y - 0.35)]


def _categories(values: List[Any]) -> List[str]:
    seen: Dict[str, None] = {}
    for v in values:
        seen.setdefault(str(v), None)
    return list(seen)
