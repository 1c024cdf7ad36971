# PYTHON_ARGCOMPLETE_OK  (shell completion: `eval "$(nrun completion bash)"`)
"""`nrun`: follow, inspect and cancel sweeps from any shell; bring sandboxes up and down.

Starts fast: it reads the SQLite store and imports a backend module only for the command that
needs it (cancelling a Slurm sweep imports the Slurm executor; `nrun list` imports none).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from nrun_core.errors import NrunError
from nrun_core.store import TERMINAL, Store


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    if argv is None:
        from nrun_core.completion import autocomplete

        autocomplete(parser)  # returns at once unless the shell asks for completions
    args = parser.parse_args(_descending_sort(list(sys.argv[1:] if argv is None else argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except NrunError as exc:
        print(f"nrun: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog is built only when help is printed (`epilog_from`): the
    list of what is installed costs a directory listing and an entry-point scan, which every
    other command skips."""

    def __init__(self, *args: Any, epilog_from: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epilog_from = epilog_from

    def format_help(self) -> str:
        if self._epilog_from is not None:
            self.epilog = self._epilog_from()
        return super().format_help()


def _catalog_epilog() -> str:
    from nrun_core.catalog import help_text

    return help_text()


def _parser() -> argparse.ArgumentParser:
    from nrun_core import completion
    from nrun_core.sandbox import SANDBOXES

    p = _Parser(prog="nrun", description="Follow, inspect and cancel nrun sweeps; look at their results.",
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog_from=_catalog_epilog)
    sub = p.add_subparsers(metavar="COMMAND")
    sweep_help = "sweep id, id prefix, name, or 'last'"

    s = sub.add_parser("list", help="recent sweeps")
    s.add_argument("-n", type=int, default=20, help="how many (default 20)")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("status", help="state of every point of a sweep")
    s.add_argument("sweep", nargs="?", default="last", help=sweep_help).completer = completion.sweeps
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("logs", help="a point's stdout/stderr (all points if none given)")
    s.add_argument("sweep", help=sweep_help).completer = completion.sweeps
    s.add_argument("point", nargs="?", type=int).completer = completion.points
    s.add_argument("-f", "--follow", action="store_true", help="keep printing until the point(s) end")
    s.add_argument("--stderr", action="store_true", help="stderr instead of stdout")
    s.set_defaults(func=cmd_logs)

    s = sub.add_parser("cancel", help="cancel a sweep, or some of its points")
    s.add_argument("sweep", help=sweep_help).completer = completion.sweeps
    s.add_argument("points", nargs="*", type=int).completer = completion.points
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the points to stop")
    s.set_defaults(func=cmd_cancel)

    s = sub.add_parser("show", help="resolved launcher config, artifact, and each point's command")
    s.add_argument("sweep", help=sweep_help).completer = completion.sweeps
    s.add_argument("point", nargs="?", type=int).completer = completion.points
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("results", help="a sweep's swept parameters against what each point returned",
                       description="One row per point: the parameters that differ between points, the "
                                   "value it returned (a flat dict: one column per key), its state, wall "
                                   "time and what it used. Sortable; exported as CSV or JSON.")
    s.add_argument("sweep", nargs="?", default="last", help=sweep_help).completer = completion.sweeps
    s.add_argument("--sort", metavar="COLUMN", help="sort by this column, '-COLUMN' descending "
                   "(e.g. --sort -value, --sort lr); numbers sort as numbers").completer = completion.columns
    s.add_argument("--format", choices=["table", "csv", "json"],
                   help="default: table, or what -o's suffix says (.csv, .json)")
    s.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of the terminal")
    s.set_defaults(func=cmd_results)

    s = sub.add_parser("plot", help="PNG: value against each swept parameter, and a timeline of the points",
                       description="Needs matplotlib: pip install 'hydra-nrun[plot]'. The timeline shows "
                                   "each point waiting (light) and running (solid), colored by where it ran.")
    s.add_argument("sweep", nargs="?", default="last", help=sweep_help).completer = completion.sweeps
    s.add_argument("-o", "--output", metavar="FILE", help="PNG to write (default: nrun-SWEEP_ID.png here)")
    s.add_argument("--value", metavar="COLUMN", help="the returned value to plot (a dict return's key; "
                   "default: the first numeric one)").completer = completion.columns
    s.set_defaults(func=cmd_plot)

    s = sub.add_parser("completion", help="print the shell hook that completes nrun (sweep ids, points)",
                       description="Add to your shell's rc file: eval \"$(nrun completion bash)\" (or zsh, "
                                   "fish). Same as argcomplete's `register-python-argcomplete nrun`.")
    s.add_argument("shell", choices=list(completion.SHELLS))
    s.set_defaults(func=cmd_completion)

    s = sub.add_parser("gc", help="remove old sweeps' records, artifacts, snapshots and runtime copies",
                       description="Keeps every live sweep, the sweeps the policy keeps (the newest N, and "
                                   "those younger than D days) and everything they use, and anything touched "
                                   "in the last 10 minutes (a launcher may be about to use it). Sweep output "
                                   "dirs are never touched. With neither option: --keep-days 30 --keep-sweeps 50.")
    s.add_argument("--keep-days", type=float, metavar="D", help="keep sweeps created in the last D days")
    s.add_argument("--keep-sweeps", type=int, metavar="N", help="keep the N newest sweeps")
    s.add_argument("--dry-run", action="store_true", help="print what would be removed and the bytes freed")
    s.set_defaults(func=cmd_gc)

    boxes = sorted(SANDBOXES)
    s = sub.add_parser("sandbox", help=f"a real backend on this machine: {', '.join(boxes)}",
                       description=f"Bring up a real backend on this machine for trying nrun, tests and CI. "
                                   f"Sandboxes: {', '.join(boxes)}.")
    s.add_argument("name", choices=boxes, metavar="NAME", help=f"one of: {', '.join(boxes)}")
    s.add_argument("action", choices=["up", "down", "status", "env"])
    s.add_argument("--purge", action="store_true", help="with down: also delete the sandbox's state")
    s.set_defaults(func=cmd_sandbox)
    return p


# -- commands -----------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    store = Store(create=False)
    rows = []
    for sw in store.sweeps(args.n):
        sw = _fresh(store, sw)
        counts = store.counts(sw["id"])
        summary = " ".join(f"{k.lower()}={v}" for k, v in sorted(counts.items()))
        rows.append([sw["id"], sw["name"] or "", sw["executor"], sw["state"] or "", _ago(sw["created"]), summary])
    _table(["SWEEP", "NAME", "EXECUTOR", "STATE", "CREATED", "POINTS"], rows)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    store = Store(create=False)
    sw = _fresh(store, store.sweep(args.sweep))
    points = store.points(sw["id"])
    if args.json:
        print(json.dumps({"sweep": _public(sw), "points": [_public(p) for p in points]}, indent=2, default=str))
        return 0
    counts = store.counts(sw["id"])
    print(f"sweep {sw['id']}  {sw['name']}  executor={sw['executor']}  state={sw['state']}  "
          + " ".join(f"{k.lower()}={v}" for k, v in sorted(counts.items())))
    rows = []
    for p in points:
        took = f"{(p['ended'] or time.time()) - p['started']:.1f}s" if p["started"] else ""
        detail = p["value_repr"] if p["state"] == "COMPLETED" else (p["error"] or "").splitlines()[0:1]
        detail = detail if isinstance(detail, str) else (detail[0] if detail else "")
        rows.append([str(p["idx"]), p["state"], p["backend_id"] or "", took, *_usage_cells(p.get("usage")),
                     " ".join(p["overrides"]), (detail or "")[:70]])
    _table(["#", "STATE", "BACKEND ID", "TIME", "WALL", "CPU", "PEAK RSS", "OVERRIDES", "RESULT / ERROR"], rows)
    from nrun_core.runner import usage_summary

    total = usage_summary([p.get("usage") for p in points if p["state"] in TERMINAL])
    if total:
        print(f"used: {total}")
    if not points and sw["state"] in TERMINAL:
        from nrun_core.store import NO_POINTS

        print(f"({NO_POINTS})")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    store = Store(create=False)
    sw = store.sweep(args.sweep)
    points = [store.point(sw["id"], args.point)] if args.point is not None else store.points(sw["id"])
    key = "stderr" if args.stderr else "stdout"
    from nrun_core.reconcile import control

    ctl = control(sw)  # where the logs are: here, or on a host without a shared filesystem
    files = {p["idx"]: ctl.logs(p, key) for p in points if p[key]}
    prefix = len(files) > 1
    offsets = {i: 0 for i in files}
    while True:
        for idx, path in files.items():
            offsets[idx] = _print_new(path, offsets[idx], f"[#{idx}] " if prefix else "")
        if not args.follow:
            return 0
        sw = _fresh(store, store.sweep(sw["id"]))
        states = {p["idx"]: p["state"] for p in store.points(sw["id"])}
        if all(states.get(i) in TERMINAL for i in files):
            for idx, path in files.items():
                offsets[idx] = _print_new(path, offsets[idx], f"[#{idx}] " if prefix else "")
            return 0
        time.sleep(0.3)


def cmd_cancel(args: argparse.Namespace) -> int:
    from nrun_core.reconcile import control, supervised

    store = Store(create=False)
    sw = store.sweep(args.sweep)
    indices: Optional[List[int]] = args.points or None
    for i in indices or []:
        store.point(sw["id"], i)  # unknown point: clear error
    store.request_cancel(sw["id"], indices)
    wanted = lambda p: indices is None or p["idx"] in indices  # noqa: E731
    if supervised(sw):
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if all(p["state"] in TERMINAL for p in store.points(sw["id"]) if wanted(p)):
                break
            time.sleep(0.2)
    else:  # nobody watches the sweep: stop the points ourselves
        live = [p for p in store.points(sw["id"]) if wanted(p) and p["state"] not in TERMINAL]
        ctl = control(sw)
        try:
            ctl.cancel([p for p in live if p["state"] != "PENDING"])
        finally:
            ctl.close()
        for p in live:
            store.update_point(sw["id"], p["idx"], state="CANCELLED", ended=time.time(),
                               error="cancelled by nrun cancel", detail="cancelled by nrun cancel (unsupervised)")
        if indices is None or all(p["state"] in TERMINAL for p in store.points(sw["id"])):
            store.update_sweep(sw["id"], state="CANCELLED", ended=time.time())
    left = [p for p in store.points(sw["id"]) if wanted(p) and p["state"] not in TERMINAL]
    done = [p for p in store.points(sw["id"]) if wanted(p) and p["state"] == "CANCELLED"]
    print(f"sweep {sw['id']}: {len(done)} point(s) cancelled"
          + (f", {len(left)} still stopping: {[p['idx'] for p in left]}" if left else ""))
    return 1 if left else 0


def cmd_show(args: argparse.Namespace) -> int:
    from nrun_core.shell import join
    from nrun_core.spec import JobSpec

    store = Store(create=False)
    sw = store.sweep(args.sweep)
    points = [store.point(sw["id"], args.point)] if args.point is not None else store.points(sw["id"])
    if args.json:
        print(json.dumps({"sweep": _public(sw), "points": [_public(p, spec=True) for p in points]},
                         indent=2, default=str))
        return 0
    print(f"sweep:     {sw['id']} ({sw['name']})\nexecutor:  {sw['executor']}\nstate:     {sw['state']}\n"
          f"command:   {join(sw['argv'] or [])}\ncwd:       {sw['cwd']}\nsweep dir: {sw['sweep_dir']}")
    art = sw.get("artifact")
    if art:
        print(f"artifact:  {art.get('digest')}  commit={art.get('commit')} dirty={art.get('dirty')} "
              f"files={len(art.get('files') or [])} packager={(art.get('packager') or {}).get('name')}")
    else:
        print("artifact:  none (passthrough: points run from the current tree)")
    print("launcher config:")
    for line in json.dumps(sw["conf"], indent=2, default=str).splitlines():
        print("  " + line)
    for p in points:
        spec = json.loads(p["spec"]) if p["spec"] else {}
        print(f"\n#{p['idx']} {p['state']}  {' '.join(p['overrides'])}")
        print(f"  job dir: {spec.get('job_dir')}\n  command: {' '.join(spec.get('command') or [])}")
        if spec.get("job_dir"):
            payload = JobSpec.from_json(p["spec"]).payload_file
            print(f"  payload: {payload} (the composed config and task function the point runtime runs)")
        for ev in store.events(sw["id"], p["idx"]):
            print(f"  {time.strftime('%H:%M:%S', time.localtime(ev['time']))} {ev['state']:<9} {ev['detail'] or ''}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from nrun_core import results, termfit

    store = Store(create=False)
    sw = _fresh(store, store.sweep(args.sweep))
    res = results.load(store, sw)
    if args.sort:
        results.sort(res, args.sort)
    fmt = results.format_for(args.output, args.format)
    if args.output:
        try:
            with open(args.output, "w", newline="") as f:
                results.write(res, fmt, f)
        except OSError as exc:
            raise NrunError(f"nrun results: cannot write -o {args.output}: {exc.strerror}; "
                            "give a path in a directory you can write") from None
        print(f"wrote {len(res.rows)} point(s) of sweep {sw['id']} as {fmt} to {args.output}", file=sys.stderr)
        return 0
    if fmt == "table":
        swept = ", ".join(res.params) or "nothing (all points alike)"
        width = results.terminal_width()
        line = (f"sweep {sw['id']}  {sw['name'] or ''}  executor={sw['executor']}  state={sw['state']}  "
                f"swept: {swept}")
        print(termfit.fit(line, width))
        results.write(res, fmt, sys.stdout, width)
    else:
        results.write(res, fmt, sys.stdout)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from nrun_core import plot, results

    plot.matplotlib_pyplot()  # the missing extra is named before anything else is read
    store = Store(create=False)
    sw = _fresh(store, store.sweep(args.sweep))
    res = results.load(store, sw)
    out = args.output or f"nrun-{sw['id']}.png"
    fig = plot.figure(store, sw, res, args.value)
    try:
        plot.save(fig, out)
    except OSError as exc:
        raise NrunError(f"nrun plot: cannot write -o {out}: {exc.strerror}; give a path in a directory "
                        "you can write") from None
    print(f"wrote {out}")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from nrun_core.completion import shell_hook

    sys.stdout.write(shell_hook(args.shell))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from nrun_core import gc
    from nrun_core.paths import nrun_home
    from nrun_core.runner import human_bytes

    keep_days, keep_sweeps = args.keep_days, args.keep_sweeps
    if keep_days is None and keep_sweeps is None:
        keep_days, keep_sweeps = gc.DEFAULT_KEEP_DAYS, gc.DEFAULT_KEEP_SWEEPS
    if (keep_days is not None and keep_days < 0) or (keep_sweeps is not None and keep_sweeps < 0):
        raise NrunError("nrun gc: --keep-days and --keep-sweeps take a number >= 0 (e.g. --keep-days 7)")
    store = Store(create=False)
    p = gc.plan(store, nrun_home(), keep_days=keep_days, keep_sweeps=keep_sweeps)
    verb = "would remove" if args.dry_run else "removing"
    print(f"nrun gc: keeping {p.kept_sweeps} sweep(s) ({p.live_sweeps} live) and {len(p.kept_digests)} "
          f"artifact(s) they use; {verb} {len(p.sweeps)} sweep record(s)")
    for sid in p.sweeps:
        print(f"  sweep   {sid}")
    for kind, path, size in p.paths:
        print(f"  {kind:<18} {human_bytes(size):>9}  {path}")
    if args.dry_run:
        print(f"would free {human_bytes(p.bytes)} (dry run: nothing was removed)")
        return 0
    problems = gc.apply(store, p)
    for line in problems:
        print(f"nrun gc: could not remove {line}", file=sys.stderr)
    print(f"freed {human_bytes(p.bytes)}")
    return 1 if problems else 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from nrun_core import sandbox
    from nrun_core.shell import exports

    import logging

    box = sandbox.get(args.name)
    logging.basicConfig(level=logging.INFO, format="# %(message)s", stream=sys.stderr)
    if args.action == "up":
        env = box.up()
        print(exports(env))
        print(f"# nrun sandbox {args.name} is up; eval \"$(nrun sandbox {args.name} env)\" to use it",
              file=sys.stderr)
    elif args.action == "down":
        if args.purge:
            import inspect

            if "purge" not in inspect.signature(box.down).parameters:
                raise NrunError(f"nrun sandbox {args.name} down has no --purge: it keeps only cached "
                                "images, which the next `up` reuses; drop --purge")
            box.down(purge=True)
        else:
            box.down()
    elif args.action == "status":
        ok, text = box.status()
        print(text)
        return 0 if ok else 1
    else:
        print(exports(box.env()))
    return 0


# -- helpers ------------------------------------------------------------------------------
def _descending_sort(argv: List[str]) -> List[str]:
    """`--sort -value` as `--sort=-value`: argparse would take '-value' for an option."""
    out: List[str] = []
    it = iter(argv)
    for a in it:
        if a == "--":
            out += [a, *it]
            break
        if a == "--sort":
            nxt = next(it, None)
            out.append(a if nxt is None else f"--sort={nxt}")
            continue
        out.append(a)
    return out


def _usage_cells(usage: Optional[Dict[str, Any]]) -> List[str]:
    """WALL, CPU and PEAK RSS of a point (GPU memory appended to RSS where known); blanks if
    the point reported nothing (not ended yet, or an older nrun)."""
    if not usage:
        return ["", "", ""]
    from nrun_core.runner import human_bytes

    rss = human_bytes(usage["max_rss"]) if usage.get("max_rss") else ""
    if usage.get("gpu_mem"):
        rss += f" (GPU {human_bytes(usage['gpu_mem'])})"
    wall = f"{usage['wall_s']:.1f}s" if usage.get("wall_s") is not None else ""
    cpu = f"{usage['cpu_s']:.1f}s" if usage.get("cpu_s") is not None else ""
    return [wall, cpu, rss]


def _fresh(store: Store, sw: Dict[str, Any]) -> Dict[str, Any]:
    from nrun_core.reconcile import reconcile

    if sw["state"] not in TERMINAL and reconcile(store, sw):
        return store.sweep(sw["id"])
    return sw


def _public(row: Dict[str, Any], spec: bool = False) -> Dict[str, Any]:
    out = dict(row)
    if "spec" in out:
        out["spec"] = json.loads(out["spec"]) if (spec and out["spec"]) else None
        if not spec:
            out.pop("spec")
    return out


LOG_CHUNK = 1 << 20  # logs can be gigabytes: read, decode and print them a chunk at a time


def _print_new(source: Any, offset: int, prefix: str) -> int:
    """Print what the log source holds from `offset` on; return the offset reached.

    With a prefix (several points' logs interleaved) only whole lines are printed, each prefixed;
    a line longer than a chunk comes in pieces, the prefix on its first. Chunks end on whole
    UTF-8 characters, so the text is the same as decoding the file at once.
    """
    at_line_start = True
    if prefix and offset:
        at_line_start = source.read(offset - 1, 1) == b"\n"
    rest = b""
    pos = offset
    while True:
        data = source.read(pos, LOG_CHUNK)
        if not data:
            break
        pos += len(data)
        buf = rest + data
        cut = buf.rfind(b"\n") + 1 if prefix else 0
        if not cut and (not prefix or len(buf) >= LOG_CHUNK):
            cut = _utf8_cut(buf)
        if cut:
            _write_log(buf[:cut], prefix, at_line_start)
            at_line_start = buf[cut - 1] == 0x0A
            offset += cut
        rest = buf[cut:]
    if rest and not prefix:  # a broken character at the very end: printed as U+FFFD, like before
        _write_log(rest, "", True)
        offset += len(rest)
    sys.stdout.flush()
    return offset


def _utf8_cut(buf: bytes) -> int:
    """Length of `buf` without a trailing, still incomplete UTF-8 character."""
    for back in range(1, min(4, len(buf)) + 1):
        b = buf[-back]
        if b & 0xC0 != 0x80:  # not a continuation byte: the last character starts here
            need = 2 if b >= 0xC0 and b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4 if 0xF0 <= b < 0xF8 else 1
            return len(buf) - back if back < need else len(buf)
    return len(buf)


def _write_log(data: bytes, prefix: str, at_line_start: bool) -> None:
    text = data.decode(errors="replace")
    if prefix:
        lines = text.splitlines(keepends=True)
        text = "".join(("" if i == 0 and not at_line_start else prefix) + line for i, line in enumerate(lines))
    sys.stdout.write(text)


def _ago(t: Optional[float]) -> str:
    if not t:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _table(header: List[str], rows: List[List[str]]) -> None:
    """Columns padded to their widest cell; on a terminal each line is cut to its width (the
    last columns, result or error, lose their end) rather than wrapped across lines."""
    from nrun_core import termfit

    columns = termfit.width(sys.stdout, env_too=False)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    for row in [header, *rows]:
        print(termfit.fit("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip(), columns))


if __name__ == "__main__":
    sys.exit(main())
