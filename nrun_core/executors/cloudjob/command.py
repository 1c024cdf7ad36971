"""A point's command and environment inside a cloud container (same for Lepton and Run:ai).

The container starts ``sh -c SCRIPT nrun-point WORKDIR ARGV...``: the script is a constant and
every user word is an argument, never shell text. It announces where the point's output goes
(that line is all the vendor's own replica log shows), enters the code's working dir and appends
the point's stdout/stderr to the job dir on the shared storage, where `nrun logs` reads them.
"""

from __future__ import annotations

from typing import Dict, List

from nrun_core.placement import Placement
from nrun_core.spec import JobSpec

SCRIPT = ('echo "nrun point $NRUN_POINT: output in $NRUN_STDOUT"; '
          'cd "$1" || exit 126; shift; exec "$@" >>"$NRUN_STDOUT" 2>>"$NRUN_STDERR"')


def argv(where: Placement, spec: JobSpec, prefix: List[str]) -> List[str]:
    return ["sh", "-c", SCRIPT, "nrun-point", where.workdir(spec), *[str(w) for w in prefix], *where.argv(spec)]


def env(where: Placement, spec: JobSpec, attempt: int, extra: Dict[str, str]) -> Dict[str, str]:
    """Plain (non-secret) variables of the point; secrets travel as references only."""
    return where.env(spec, token=spec.token(attempt),
                     extra={"NRUN_STDOUT": where.log(spec, "stdout"), "NRUN_STDERR": where.log(spec, "stderr"),
                            **extra})
