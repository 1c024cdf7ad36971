"""The point runtime: one sweep point, run where it lands, exactly as Hydra's multirun runs it.

Every backend and mode runs a point through this file. Fork mode calls ``run_point`` in the
forked child with the launcher's own objects; everywhere else (commands, torchrun ranks, Slurm
tasks, containers, remote hosts) ``python nrun_point.py PAYLOAD`` loads what the launcher wrote:
the config it composed (hydra.* overrides applied, job num/id, output dir), a reference to the
task function Hydra handed it, and the point's identity. Nothing composes the app a second time,
so a config that picks a launcher or sets hydra.mode runs the same everywhere, and the function
that runs is the one Hydra was given, never whatever ``__main__`` happens to be.

This file imports only the standard library, hydra and omegaconf (no nrun), so it is mounted or
copied as it is into images and hosts that have hydra-core but no nrun install.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import importlib
import importlib.util
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

FORMAT = 2  # 2: the config as the sweep's Hydra node + the point's own part (payload.Pickler)
COMPLETED = "COMPLETED"
FAILED = "FAILED"
PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_GRACE_S = 2.0


# -- the point's identity and result file ----------------------------------------------------
def overrides_digest(overrides: List[str]) -> str:
    return hashlib.sha256(json.dumps(list(overrides)).encode()).hexdigest()[:16]


def identity(sweep_id: str, index: int, overrides: List[str]) -> Dict[str, Any]:
    """What ties a result to its point: a result of another sweep or point is never read."""
    return {"sweep_id": sweep_id, "index": int(index), "overrides": overrides_digest(overrides)}


def write_result(path: "str | os.PathLike[str]", *, status: str, value: Any = None,
                 error: Optional[BaseException] = None, ident: Optional[Dict[str, Any]] = None) -> None:
    """Atomically write the result (rename), so a reader never sees half a file.

    The value travels pickled (base64 inside JSON, readable by `nrun show`) with a repr beside
    it: a launcher whose Python cannot unpickle it still shows what it was.
    """
    record: Dict[str, Any] = {"status": status, "time": time.time(), "pid": os.getpid(),
                              "identity": ident, "usage": usage()}
    if status == COMPLETED:
        record["repr"] = _short_repr(value)
        try:
            record["pickle"] = base64.b64encode(pickle.dumps(value, protocol=4)).decode()
        except Exception as exc:  # unpicklable values still report their repr
            record["pickle_error"] = f"{type(exc).__name__}: {exc}"
    else:
        assert error is not None
        record["error_type"] = type(error).__name__
        record["error"] = str(error)
        record["traceback"] = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, target)


def _short_repr(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the value
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- what the point used ------------------------------------------------------------------------
_START: Dict[str, float] = {}  # pid -> when the point started in that process


def mark_start() -> None:
    """The point's clock starts now in this process (a forked point: in the fork, not when the
    launcher imported this module); a second call in the same process keeps the first time."""
    _START.setdefault(str(os.getpid()), time.time())


def usage() -> Dict[str, Any]:
    """What this point used so far: wall s since ``mark_start``, CPU s (user + sys of this
    process and its waited-for children), peak RSS in bytes (the largest process), and GPU memory
    in bytes where torch's CUDA or nvidia-smi can tell (left out where neither can)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out: Dict[str, Any] = {
        "wall_s": round(time.time() - _START.get(str(os.getpid()), time.time()), 3),
        "cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 3),
        "max_rss": max(me.ru_maxrss, kids.ru_maxrss) * 1024,  # Linux reports KiB
    }
    gpu = gpu_memory()
    if gpu is not None:
        out["gpu_mem"] = gpu
    return out


def gpu_memory() -> Optional[int]:
    """Peak GPU memory of the point in bytes: torch's own peak if it already uses CUDA (never
    imported here), else what nvidia-smi shows this process and its descendants holding; None
    where there is no GPU, no driver or no tool. Never raises: a point's result is not worth
    losing over a measurement."""
    try:
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_initialized():
            return int(sum(cuda.max_memory_reserved(d) for d in range(cuda.device_count())))
        smi = shutil.which("nvidia-smi")
        if not smi:
            return None
        out = subprocess.run([smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        mine = {os.getpid(), *descendants(os.getpid())}
        total, seen = 0, False
        for line in out.stdout.splitlines():
            parts = [x.strip() for x in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) in mine and parts[1].isdigit():
                total += int(parts[1]) * 1024 * 1024  # MiB
                seen = True
        return total if seen else None
    except Exception:
        return None


# -- running a point ---------------------------------------------------------------------------
def run_point(task_function: Any, cfg: Any, *, result_file: str, ident: Optional[Dict[str, Any]],
              task_name: Optional[str] = None, hydra_context: Any = None) -> int:
    """Hydra's own run_job on the composed config (chdir, job logging, `.hydra/` files,
    callbacks, env_set), then the result file. Returns the point's exit code (0 or 1)."""
    from hydra.core.utils import JobRuntime, JobStatus, run_job, setup_globals

    mark_start()
    setup_globals()
    if task_name:
        JobRuntime.instance().set("name", task_name)
    if hydra_context is None:
        from hydra._internal.callbacks import Callbacks
        from hydra.types import HydraContext

        hydra_context = HydraContext(config_loader=None, callbacks=Callbacks(cfg))  # type: ignore[arg-type]
    ret = run_job(hydra_context=hydra_context, task_function=task_function, config=cfg,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    writes = os.environ.get("RANK", "0") in ("", "0")  # under torchrun every rank runs; rank 0 reports
    if ret.status == JobStatus.COMPLETED:
        if writes:
            write_result(result_file, status=COMPLETED, value=ret._return_value, ident=ident)
        return 0
    error = ret._return_value
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    if writes:
        write_result(result_file, status=FAILED, error=error, ident=ident)
    return 1


def run_payload(payload: Dict[str, Any]) -> int:
    """Run the point a payload describes, on this machine (see ``main``)."""
    env = os.environ
    code_dir = env.get("NRUN_CODE_DIR") or payload["code_root"]
    result_file = env.get("NRUN_RESULT_FILE") or payload["result_file"]
    _set_version_base(payload.get("version_base"))
    task = load_task(payload["task"], code_dir)
    cfg = load_config(payload["config"])
    _place(cfg, payload, code_dir)
    return run_point(task, cfg, result_file=result_file, ident=payload.get("identity"),
                     task_name=payload.get("task_name"))


def main(argv: Optional[List[str]] = None) -> int:
    """``python nrun_point.py PAYLOAD``: the point's process on every backend but fork."""
    mark_start()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python nrun_point.py PAYLOAD (written by the nrun launcher)", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # this file's dir is not the app's
    become_subreaper()
    payload = json.loads(Path(args[0]).read_text())
    if payload.get("format") != FORMAT:
        print(f"nrun: {args[0]} has payload format {payload.get('format')}, this runtime reads {FORMAT}: "
              "the launcher and the point runtime come from different nrun versions", file=sys.stderr)
        return 2
    try:
        code = run_payload(payload)
    except BaseException as exc:  # the point could not even start: say why where the launcher looks
        if not isinstance(exc, SystemExit) or exc.code not in (0, None):
            traceback.print_exc()
            if os.environ.get("RANK", "0") in ("", "0"):
                result = os.environ.get("NRUN_RESULT_FILE") or payload["result_file"]
                error = exc if isinstance(exc, Exception) else RuntimeError(f"the point exited: {exc!r}")
                write_result(result, status=FAILED, error=error, ident=payload.get("identity"))
        code = 1 if not isinstance(exc, SystemExit) else _exit_code(exc)
    end_leftovers()
    return code


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def _set_version_base(base: Optional[str]) -> None:
    """As the app's @hydra.main(version_base=...) set it in the launcher (chdir default, ...)."""
    if base is None:
        return
    from hydra.version import VersionBase
    from packaging.version import Version

    VersionBase.instance().setbase(Version(base))


def _place(cfg: Any, payload: Dict[str, Any], code_dir: str) -> None:
    """What only the running side knows: the backend's job id, where the code and job dir are."""
    from omegaconf import open_dict, read_write

    job_id = os.environ.get("NRUN_JOB_ID")
    job_dir = os.path.normpath(os.environ.get("NRUN_JOB_DIR") or payload["job_dir"])
    relocated = os.path.realpath(code_dir) != os.path.realpath(payload["code_root"])
    moved = os.path.realpath(os.getcwd()) != os.path.realpath(payload.get("launch_cwd") or os.getcwd())
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        if job_id:
            cfg.hydra.job.id = job_id
        if relocated:  # get_original_cwd(): the directory the code runs from here
            cfg.hydra.runtime.cwd = os.getcwd()
        # The job dir where the launcher put it: a relative hydra.sweep.dir means the launch dir,
        # not wherever this process starts (a snapshot, /nrun/code, a remote code dir).
        if job_dir != os.path.normpath(payload["job_dir"]) or moved:
            cfg.hydra.sweep.dir = os.path.dirname(job_dir)
            cfg.hydra.sweep.subdir = os.path.basename(job_dir)


# -- the task function -------------------------------------------------------------------------
def load_task(ref: Dict[str, Any], code_dir: str) -> Any:
    """The task function from its reference (module or app file + qualname), or by value."""
    if ref["kind"] == "pickle":
        return pickle.loads(base64.b64decode(ref["data"]))
    root = _here(ref.get("root"), code_dir)
    if root and root not in sys.path:
        sys.path.insert(0, root)
    if ref["module"] == "__main__":
        module = _load_main(_here(ref["file"], code_dir), ref.get("spec_name"))
    else:
        module = importlib.import_module(ref["module"])
    obj: Any = module
    for part in ref["qualname"].split("."):
        obj = getattr(obj, part)
    return unwrap_hydra_main(obj)


def unwrap_hydra_main(obj: Any) -> Any:
    """The function under @hydra.main (the one Hydra hands to launchers), else obj itself."""
    code = getattr(obj, "__code__", None)
    if code is not None and code.co_name == "decorated_main" and \
            code.co_filename.replace(os.sep, "/").endswith("hydra/main.py") and hasattr(obj, "__wrapped__"):
        return obj.__wrapped__
    return obj


def _here(path: Optional[str], code_dir: str) -> Optional[str]:
    """A payload path on this machine: relative ones are relative to the code dir."""
    if path is None:
        return None
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(code_dir, path))


def _load_main(path: Optional[str], spec_name: Optional[str]) -> types.ModuleType:
    """The app's main module, under ``__main__`` (as pickles and the launcher name it) but run
    as ``__mp_main__`` (as multiprocessing does), so its `if __name__ == "__main__"` block stays
    put; an unguarded call of the @hydra.main function while it loads starts nothing."""
    if spec_name:
        spec = importlib.util.find_spec(spec_name)
        if spec is None or not spec.origin:
            raise ImportError(f"cannot find the app module {spec_name} (sys.path: {sys.path})")
        path = spec.origin
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"the app file {path} is not here (the code dir holds: "
                                f"{sorted(os.listdir(os.path.dirname(path or '.') or '.'))[:20]})")
    module = types.ModuleType("__mp_main__")
    module.__file__ = path
    if spec_name:
        module.__package__ = spec_name.rpartition(".")[0]
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    saved_argv = sys.argv[:]
    sys.argv = [path]
    with _hydra_main_inert():
        try:
            code = compile(Path(path).read_bytes(), path, "exec")
            exec(code, module.__dict__)
        finally:
            sys.argv = saved_argv
    return module


class _hydra_main_inert:
    """While the app module loads, a call of its @hydra.main function does not start Hydra."""

    def __enter__(self) -> None:
        self.module = importlib.import_module("hydra.main")  # the submodule, not the function
        self.saved = self.module._run_hydra  # type: ignore[attr-defined]
        self.module._run_hydra = lambda **kwargs: None  # type: ignore[attr-defined]

    def __exit__(self, *exc: Any) -> None:
        self.module._run_hydra = self.saved  # type: ignore[attr-defined]


# -- the composed config -----------------------------------------------------------------------
def load_config(data: Dict[str, Any]) -> Any:
    try:
        cfg = pickle.loads(base64.b64decode(data["pickle"]))
        if data.get("hydra"):
            _put_hydra(cfg, data["hydra"])
        return cfg
    except Exception as exc:
        import omegaconf

        theirs = data.get("omegaconf", "?")
        raise RuntimeError(
            f"this Python could not read the config the launcher composed ({type(exc).__name__}: {exc}). "
            f"The launcher has omegaconf {theirs}, this Python {omegaconf.__version__} at {sys.executable}; "
            "install the same hydra-core/omegaconf here (and the app's own packages)") from exc


def _put_hydra(cfg: Any, hydra: Dict[str, Any]) -> None:
    """Hydra's node of the point: the sweep's base with the point's patched subtrees, put back
    at its place in the config (see nrun_core.payload.Pickler, which took them apart)."""
    node = pickle.loads(base64.b64decode(hydra["base"]))
    for path, blob in hydra["patch"]:
        parent = node
        for key in path[:-1]:
            parent = parent.__dict__["_content"][key]
        sub = pickle.loads(base64.b64decode(blob))
        sub.__dict__["_parent"] = parent
        parent.__dict__["_content"][path[-1]] = sub
    root = cfg.__dict__
    items = list(root["_content"].items())
    items.insert(int(hydra["at"]), ("hydra", node))
    root["_content"] = dict(items)
    node.__dict__["_parent"] = cfg


# -- processes the point leaves behind ---------------------------------------------------------
def become_subreaper() -> bool:
    """Orphans of the point's processes (daemons, double forks) stay our descendants, so the
    point can end them; without this they would belong to init and outlive the point."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False


def descendants(pid: int) -> List[int]:
    """Every live descendant of ``pid``: the kernel's children lists (a few reads), or one pass
    over /proc where the kernel keeps none."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return _descendants_by_scan(pid)
    out: List[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:  # it ended while we looked
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _descendants_by_scan(pid: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - no /proc
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: List[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def end_leftovers(grace_s: float = LEFTOVER_GRACE_S) -> List[int]:
    """TERM, then KILL, whatever the point started and left running; reap them. A sweep point
    owns its processes, as a batch job does: nothing outlives it."""
    left = descendants(os.getpid())
    if not left:
        return []
    names = ", ".join(f"{p} ({_cmdline(p)})" for p in left[:5])
    print(f"nrun: the point left {len(left)} process(es) running: {names}; stopping them",
          file=sys.stderr, flush=True)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in descendants(os.getpid()):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 1.0)
        while time.monotonic() < deadline:
            _reap()
            if not descendants(os.getpid()):
                break
            time.sleep(0.02)
    _reap()
    return left


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
