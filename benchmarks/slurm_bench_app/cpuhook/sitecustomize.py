"""Benchmark only: every Python process that imports this records its own CPU time at exit.

On PYTHONPATH with BENCH_CPU_LOG set, the launcher and every process of every Slurm task (sbatch
exports the environment) append "pid cpu_seconds argv0" to that file, so the CPU a sweep costs
on the nodes can be summed whatever started the processes.
"""

import atexit
import os
import resource
import sys

_LOG = os.environ.get("BENCH_CPU_LOG")
if _LOG:
    def _record() -> None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {r.ru_utime + r.ru_stime:.4f} {os.path.basename(sys.argv[0] or '-')}\n")

    atexit.register(_record)
