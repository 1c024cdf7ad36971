"""Where the Slurm sandbox keeps its files, and the config files it writes (pure text, no I/O).

Choices, and why (measured in /work/shared/design/FACTS.md):
- Two slurmd nodes on this host (MULTIPLE_SLURMD) so multi-node jobs are real; each declares
  ``CPUS_PER_NODE`` CPUs whatever the hardware has (``SlurmdParameters=config_overrides`` keeps
  slurmd from draining the node for it). Test tasks mostly sleep or start Python, so 2 x 16
  one-CPU slots let a 20-point sweep run at once instead of 4 at a time (CPUs=2). Declaring CPUs
  keeps Slurm's ordinary accounting (one CPU per task, nothing shared) and is easier to reason
  about than ``OverSubscribe``, whose sharing depends on each job's ``--oversubscribe`` flag.
- Memory is not a consumable (``CR_CPU``) and each node reports the host's memory, so a job that
  asks for ``--mem=4G`` (hydra-submitit's default) is accepted but nothing is enforced.
- Accounting through slurmdbd + a private MariaDB: without it sacct fails and submitit sees every
  job as UNKNOWN. slurmdbd reaches MariaDB by unix socket as root (socket authentication), so no
  database password exists anywhere.
- ``batch_sched_delay=0`` (jobs start in ~1 s, not ~4 s), ``KillWait=5`` (cancelled jobs free
  their CPUs fast), no cgroups (``proctrack/linuxproc``, ``task/none``). Every daemon listens
  on 127.0.0.1 only: ``NoInAddrAny`` in slurm.conf, and again in slurmdbd.conf for slurmdbd.
- ``MinJobAge=120``: squeue forgets finished jobs after 2 min; sacct (what submitit reads) keeps
  them. ``MaxTime`` is 1 day so hydra-submitit's 60 min default is accepted; ``DefaultTime`` of
  30 min bounds jobs that ask for nothing; ``EnforcePartLimits=ALL`` rejects impossible requests
  at submit time instead of leaving them pending forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CLUSTER = "nrun"
NODES = ("n1", "n2")
CPUS_PER_NODE = 16
PARTITION = "debug"
# Ports away from Slurm's (6817-6819) and MariaDB's (3306) defaults: a system install can coexist.
CTLD_PORT = 16817
DBD_PORT = 16819
DB_PORT = 16306
SLURMD_PORTS = (16901, 16902)
HOSTS_MARK = "# nrun-sandbox-slurm"


@dataclass(frozen=True)
class Layout:
    """Every path the sandbox uses, under one root (kept short: unix sockets < 108 bytes)."""

    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def dbd_conf(self) -> Path:  # slurmdbd has no -f: it reads the file beside $SLURM_CONF
        return self.etc / "slurmdbd.conf"

    @property
    def my_cnf(self) -> Path:
        return self.etc / "my.cnf"

    @property
    def run(self) -> Path:  # sockets and the daemons' own pid files; mode 755 (munged checks)
        return self.root / "run"

    @property
    def munge_socket(self) -> Path:
        return self.run / "munge.sock"

    @property
    def db_socket(self) -> Path:
        return self.run / "mysql.sock"

    @property
    def key_dir(self) -> Path:  # mode 700
        return self.root / "key"

    @property
    def munge_key(self) -> Path:
        return self.key_dir / "munge.key"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def pids(self) -> Path:  # our records (pid + start time + program), see _proc.Record
        return self.root / "pids"

    @property
    def db_data(self) -> Path:
        return self.root / "db"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def lock(self) -> Path:
        return self.root / "lock"


def slurm_conf(lay: Layout, *, host: str, mem_mb: int) -> str:
    """slurm.conf for one controller and two slurmd nodes on this host."""
    first, last = SLURMD_PORTS
    node = f"NodeHostname={host} NodeAddr=127.0.0.1 Port=[{first}-{last}]"
    size = f"CPUs={CPUS_PER_NODE} RealMemory={mem_mb}"
    return f"""\
# Written by nrun_core.sandbox.slurm; rewritten at every `up`.
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={CTLD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={lay.munge_socket}
CredType=cred/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation={lay.state}
SlurmdSpoolDir={lay.spool}/%n
SlurmctldPidFile={lay.run}/slurmctld.pid
SlurmdPidFile={lay.run}/slurmd.%n.pid
SlurmctldLogFile={lay.log}/slurmctld.log
SlurmdLogFile={lay.log}/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=120
Waittime=0
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={DBD_PORT}
AccountingStoragePass={lay.munge_socket}
JobCompType=jobcomp/none
NodeName=n[1-2] {node} {size} State=UNKNOWN
PartitionName={PARTITION} Nodes=n[1-2] Default=YES DefaultTime=00:30:00 MaxTime=1-00:00:00 State=UP
"""


def slurmdbd_conf(lay: Layout, *, host: str) -> str:
    """slurmdbd.conf: MariaDB by unix socket as root ($MYSQL_UNIX_PORT), no password."""
    return f"""\
# Written by nrun_core.sandbox.slurm; must stay mode 600.
AuthType=auth/munge
AuthInfo=socket={lay.munge_socket}
DbdHost={host}
DbdAddr=127.0.0.1
DbdPort={DBD_PORT}
CommunicationParameters=NoInAddrAny
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
LogFile={lay.log}/slurmdbd.log
PidFile={lay.run}/slurmdbd.pid
DebugLevel=info
"""


def my_cnf(lay: Layout) -> str:
    """A private MariaDB: own datadir, socket and port, 127.0.0.1 only, small memory."""
    return f"""\
# Written by nrun_core.sandbox.slurm.
[mysqld]
datadir={lay.db_data}
socket={lay.db_socket}
port={DB_PORT}
bind-address=127.0.0.1
pid-file={lay.run}/mariadb.pid
log-error={lay.log}/mariadb.log
user=root
skip-name-resolve
skip-log-bin
performance_schema=OFF
max_connections=64
innodb_buffer_pool_size=64M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
"""
