"""A point's command and environment inside a cloud container (same for Lepton and Run:ai).

The container starts ``sh -c SCRIPT nrun-point WORKDIR ARGV...``: the script is a constant and
every user word is an argument, never shell text. It announces where the point's output goes
(that line is all the vendor's own replica log shows), enters the code's working dir and appends
the point's stdout/stderr to the job dir on the shared storage, where `nrun logs` reads them.

A point on several nodes is one job of several replicas. The vendor tells each replica which
one it is and how to reach replica 0 in its own variables; ``MULTI_SCRIPT`` maps them, in the
container, to what the point's launcher reads (nothing is downloaded):
- ``NRUN_REPLICAS=lepton``: LEPTON_JOB_WORKER_INDEX; replica 0 is
  ``${LEPTON_JOB_SERVICE_PREFIX:-$LEPTON_JOB_NAME}-0.${LEPTON_SUBDOMAIN:-$LEPTON_JOB_NAME-job-svc}``
  (Lepton's own multi-node recipe), the rendezvous port is NRUN_RDZV_PORT (launcher.rdzv_port).
- ``NRUN_REPLICAS=pytorchjob`` (Run:ai distributed = a Kubeflow PyTorchJob): RANK, MASTER_ADDR,
  MASTER_PORT.
- ``NRUN_NODE_ENV=pet`` (torchrun, ft): PET_NODE_RANK, PET_RDZV_ENDPOINT and, unless set,
  PET_RDZV_CONF=is_host=<replica 0> (exactly one agent hosts the rendezvous store).
  ``NRUN_NODE_ENV=torch`` (direct): MASTER_ADDR/PORT, RANK, NODE_RANK, WORLD_SIZE (one process
  per node), so the point runtime's rank 0 alone writes the result.
Replica k > 0 writes its output to ``stdout.node<k>.log`` / ``stderr.node<k>.log`` beside replica 0's.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from nrun_core import wrappers
from nrun_core.placement import Placement
from nrun_core.spec import JobSpec

SCRIPT = ('echo "nrun point $NRUN_POINT: output in $NRUN_STDOUT"; '
          'cd "$1" || exit 126; shift; exec "$@" >>"$NRUN_STDOUT" 2>>"$NRUN_STDERR"')

_NODE = (
    'case "$NRUN_REPLICAS" in '
    'lepton) n="${LEPTON_JOB_WORKER_INDEX:-0}"; '
    'h="${LEPTON_JOB_SERVICE_PREFIX:-$LEPTON_JOB_NAME}-0.${LEPTON_SUBDOMAIN:-$LEPTON_JOB_NAME-job-svc}"; '
    'p="$NRUN_RDZV_PORT";; '
    'pytorchjob) n="${RANK:-0}"; h="$MASTER_ADDR"; p="$MASTER_PORT";; '
    '*) echo "nrun: NRUN_REPLICAS=$NRUN_REPLICAS names no replica convention" >&2; exit 126;; esac; '
    'case "$NRUN_NODE_ENV" in '
    'pet) export PET_NODE_RANK="$n" PET_RDZV_ENDPOINT="$h:$p"; '
    '[ -n "$PET_RDZV_CONF" ] || if [ "$n" = 0 ]; then export PET_RDZV_CONF=is_host=true; '
    'else export PET_RDZV_CONF=is_host=false; fi;; '
    'torch) export MASTER_ADDR="$h" MASTER_PORT="$p" RANK="$n" NODE_RANK="$n" WORLD_SIZE="$NRUN_NODES" '
    'LOCAL_RANK=0 LOCAL_WORLD_SIZE=1;; esac; '
    '[ "$n" = 0 ] || { NRUN_STDOUT="${NRUN_STDOUT%.log}.node$n.log"; NRUN_STDERR="${NRUN_STDERR%.log}.node$n.log"; }; '
)
MULTI_SCRIPT = (_NODE + 'echo "nrun point $NRUN_POINT node $n: output in $NRUN_STDOUT"; '
                'cd "$1" || exit 126; shift; exec "$@" >>"$NRUN_STDOUT" 2>>"$NRUN_STDERR"')

CONVENTIONS = ("lepton", "pytorchjob")


def argv(where: Placement, spec: JobSpec, prefix: List[str], replicas: Optional[str] = None) -> List[str]:
    """``replicas``: the vendor's replica convention (CONVENTIONS) for a point on several nodes."""
    script = MULTI_SCRIPT if replicas and int(spec.nodes) > 1 else SCRIPT
    return ["sh", "-c", script, "nrun-point", where.workdir(spec), *[str(w) for w in prefix], *where.argv(spec)]


def env(where: Placement, spec: JobSpec, attempt: int, extra: Dict[str, str]) -> Dict[str, str]:
    """Plain (non-secret) variables of the point; secrets travel as references only."""
    return where.env(spec, token=spec.token(attempt),
                     extra={"NRUN_STDOUT": where.log(spec, "stdout"), "NRUN_STDERR": where.log(spec, "stderr"),
                            **extra})


def node_env(spec: JobSpec, launcher: Any, replicas: str) -> Dict[str, str]:
    """What ``MULTI_SCRIPT`` reads besides the vendor's variables ({} on one node)."""
    assert replicas in CONVENTIONS, replicas
    nodes = int(spec.nodes)
    if nodes <= 1:
        return {}
    lay = wrappers.layout(launcher, nodes=nodes, gpus_per_node=int(spec.gpus_per_node or 0))
    out = {"NRUN_REPLICAS": replicas, "NRUN_NODES": str(nodes),
           "NRUN_NODE_ENV": "pet" if spec.launcher in wrappers.ELASTIC else "torch"}
    if replicas == "lepton":  # a PyTorchJob names its master's port itself (MASTER_PORT)
        out["NRUN_RDZV_PORT"] = str(lay.rdzv_port)
    return out
