"""What the dry-run tests of the container and cloud executors share: a project whose executor's
client library is installed, its app launched with nothing behind the executor, the printed
requests normalised (paths, ids, digests), and golden files in tests/golden/ (after an intended
change, regenerate with NRUN_UPDATE_GOLDEN=1 and review the diff)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import Dict, Optional

from conftest import PYTHON, ROOT, make_project
from require import missing

GOLDEN = ROOT / "tests" / "golden"
TRICKY = """a b; $(touch /tmp/nrun_pwned) `x` 'q' "dq" $HOME"""  # an override value no shell may run


def project_needing(tmp_path: Path, module: str, extra: str) -> Path:
    """A copy of the test apps, once ``module`` (the executor's client library) is importable."""
    if importlib.util.find_spec(module) is None:
        missing(extra, f"{module} is not installed: pip install -e '.[{extra}]' (the test extras have it)")
    return make_project(tmp_path)


def launch(cwd: Path, app: str, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """`python APP -m ARGS` in the project, with its sweep dir beside it, as a user's shell runs it."""
    return subprocess.run([PYTHON, app, "-m", *args, f"hydra.sweep.dir={cwd.parent}/multirun"],
                          cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


def normalised(out: str, tmp_path: Path) -> str:
    text = out[out.index("# nrun dry run"):]
    text = text.replace(str(tmp_path), "<TMP>").replace(str(ROOT), "<ROOT>")
    text = re.sub(r"\d{8}-\d{6}-[0-9a-f]{4}", "<SWEEP>", text)
    text = re.sub(r"[0-9a-f]{64}", "<DIGEST>", text)
    text = re.sub(r"runtime/[0-9a-f]{16}", "runtime/<RT>", text)
    return re.sub(r"# artifact [0-9a-f]{16} ", "# artifact <DIGEST16> ", text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NRUN_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing {path}; create it with NRUN_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"dry run differs from {path} (NRUN_UPDATE_GOLDEN=1 to accept)"
