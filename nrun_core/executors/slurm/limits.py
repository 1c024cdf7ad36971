"""The cluster's limits on one sweep, read once per sweep, checked before anything is submitted.

- MaxArraySize (``scontrol show config``) caps the array *index*: an array of n tasks needs
  n <= MaxArraySize, and every array nrun submits starts at index 0.
- MaxJobCount (slurmctld's job table) and the user's association MaxSubmitJobs (``sacctmgr``,
  only where set) count every array task as a job. A sweep that cannot fit, with what is already
  queued, is refused with a ConfigError naming the limit and the fix.
- CPUs of the partition (``sinfo``): how many one-CPU tasks may run at once, for packing points.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

from nrun_core.errors import ConfigError

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001
SLURM_DEFAULT_MAX_JOB_COUNT = 10000


@dataclass
class Limits:
    max_array_size: int = SLURM_DEFAULT_MAX_ARRAY_SIZE
    max_job_count: Optional[int] = None       # slurmctld's MaxJobCount (None: not read)
    max_submit_jobs: Optional[int] = None     # the user's association MaxSubmitJobs (None: unset)
    submit_account: Optional[str] = None      # the account of that association (None: any)
    queued_all: int = 0                       # jobs slurmctld holds now (every user)
    queued_mine: int = 0                      # of them, the submitting user's
    cpus: Optional[int] = None                # CPUs of the partition (all nodes)
    source: str = "the cluster (scontrol show config)"

    @property
    def array_cap(self) -> int:
        """Tasks per array: indices 0 .. MaxArraySize-1."""
        return max(1, self.max_array_size - 1) if self.max_array_size > 1 else 1

    def check(self, tasks: int, arrays: int, site: Any = None) -> None:
        """ConfigError if ``tasks`` more jobs cannot be queued; nothing was submitted yet. The
        queue is counted only where it matters: the user's jobs under a MaxSubmitJobs, everyone's
        when the sweep alone is a tenth of MaxJobCount."""
        if site is not None and self.max_submit_jobs is not None:
            # the association's jobs: this user's in that account (jobs in others count elsewhere)
            self.queued_mine = _count(site, ["-u", _user(site)] +
                                      (["-A", self.submit_account] if self.submit_account else []))
        if site is not None and self.max_job_count is not None and tasks * 10 >= self.max_job_count:
            self.queued_all = _count(site, [])
        fix = ("run fewer points per sweep, pack several points per array task "
               "(hydra.launcher.points_per_task=K), or ask the cluster's admins to raise it")
        if self.max_submit_jobs is not None and self.queued_mine + tasks > self.max_submit_jobs:
            raise ConfigError(
                f"the sweep needs {tasks} Slurm job(s) ({arrays} array(s)) but your association allows "
                f"MaxSubmitJobs={self.max_submit_jobs} and you already have {self.queued_mine} queued "
                f"(sacctmgr show assoc; another account: hydra.launcher.account); {fix}. Nothing was submitted.")
        if self.max_job_count is not None and self.queued_all + tasks > self.max_job_count:
            raise ConfigError(
                f"the sweep needs {tasks} Slurm job(s) ({arrays} array(s)) but slurmctld holds at most "
                f"MaxJobCount={self.max_job_count} jobs and {self.queued_all} are queued already "
                f"(scontrol show config); {fix}. Nothing was submitted.")


def read(site: Any, partition: Optional[str], max_array_size: Optional[int] = None,
         offline: bool = False, account: Optional[str] = None) -> Limits:
    """The limits as the cluster states them (``max_array_size`` overrides MaxArraySize).

    ``offline`` (a dry run): Slurm is not asked; Slurm's defaults stand in, and say so.
    """
    if offline:
        return Limits(max_array_size=max_array_size or SLURM_DEFAULT_MAX_ARRAY_SIZE,
                      source=("hydra.launcher.max_array_size" if max_array_size else
                              f"Slurm's default MaxArraySize={SLURM_DEFAULT_MAX_ARRAY_SIZE} (a dry run does "
                              "not ask the cluster; set hydra.launcher.max_array_size to see another)"))
    asks = (lambda: _config(site), lambda: _max_submit(site, account), lambda: _cpus(site, partition))
    if site.remote:  # one SSH connection: one question after the other
        conf, max_submit, cpus = (ask() for ask in asks)
    else:  # three client commands at once: the sweep waits for the slowest (sacctmgr), not the sum
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(asks)) as pool:
            conf, max_submit, cpus = (f.result() for f in [pool.submit(ask) for ask in asks])
    return Limits(max_array_size=max_array_size or _int(conf.get("MaxArraySize")) or SLURM_DEFAULT_MAX_ARRAY_SIZE,
                  max_job_count=_int(conf.get("MaxJobCount")), max_submit_jobs=max_submit[0],
                  submit_account=max_submit[1], cpus=cpus,
                  source="hydra.launcher.max_array_size" if max_array_size else "the cluster (scontrol show config)")


def _config(site: Any) -> Dict[str, str]:
    out = site.run(["scontrol", "show", "config"], timeout=30)
    found: Dict[str, str] = {}
    if out.returncode != 0:
        return found
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip()
    return found


def _max_submit(site: Any, account: Optional[str]) -> "tuple[Optional[int], Optional[str]]":
    """The tightest MaxSubmitJobs (or GrpSubmitJobs) of the user's association in the account the
    sweep runs under (hydra.launcher.account, else the user's default account), and that account;
    (None, None) if unset."""
    user = _user(site)
    out = site.run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}",
                    "format=account,maxsubmit,grpsubmit"], timeout=30)
    if out.returncode != 0:
        return None, None
    rows = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
    if account is None and len({r[0] for r in rows}) > 1:
        default = site.run(["sacctmgr", "-n", "-P", "show", "user", user, "format=defaultaccount"], timeout=30)
        account = default.stdout.strip().splitlines()[0] if default.returncode == 0 and default.stdout.strip() else None
    if account is None and len({r[0] for r in rows}) == 1:
        account = rows[0][0]
    values = [_int(v) for r in rows if account is None or r[0] == account for v in r[1:]]
    found = [v for v in values if v is not None]
    return (min(found), account) if found else (None, None)


def _count(site: Any, where: "list[str]") -> int:
    """Jobs slurmctld holds now (array tasks one by one), of one user or of all."""
    out = site.run(["squeue", "-h", "-r", "-o", "%i", *where], timeout=30)
    return len(out.stdout.split()) if out.returncode == 0 else 0


def _cpus(site: Any, partition: Optional[str]) -> Optional[int]:
    """Total CPUs of the partition (the default one when unset), from ``sinfo -o %C``."""
    argv = ["sinfo", "-h", "-o", "%P %C"]
    out = site.run(argv + (["-p", partition] if partition else []), timeout=30)
    if out.returncode != 0:
        return None
    total = 0
    for line in out.stdout.splitlines():
        name, _, cpus = line.strip().partition(" ")
        if partition is None and not name.endswith("*"):
            continue  # the default partition is the one sinfo marks with *
        m = re.match(r"^\d+/\d+/\d+/(\d+)$", cpus.strip())
        if m:
            total += int(m.group(1))
    return total or None


def _int(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    m = re.match(r"^\s*(\d+)", str(text))
    return int(m.group(1)) if m else None


def _user(site: Any = None) -> str:
    """The user Slurm sees: the SSH login's over SSH, this process's otherwise."""
    remote = getattr(getattr(site, "transport", None), "user", None)
    if remote:
        return str(remote)
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no user name
        return "root"
