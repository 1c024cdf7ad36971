"""Help texts list what this install has (from the registries, not from hand-kept text), `nrun
--help` stays light, and shell completion offers the store's real sweep ids and point numbers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import NRUN, ROOT, nrun, run_app
from nrun_core import registry
from nrun_core.sandbox import SANDBOXES


def _yaml_names(group: str) -> list:
    return sorted(f[:-5] for f in os.listdir(ROOT / "conf" / "nrun" / group) if f.endswith(".yaml") and f[0] != "_")


def test_help_lists_executors_packagers_launchers_and_sandboxes():
    out = nrun("--help", env={"COLUMNS": "60"})  # wrapped: names on continuation lines count too
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    listed = re.search(r"available here: executors hydra/launcher=NAME (.*) packagers nrun/packager=NAME (.*) "
                       r"launchers nrun/launcher=NAME (.*) sandboxes nrun sandbox NAME up (.*) shell completion", text)
    assert listed, out.stdout
    names = [set(g.split(", ")) for g in listed.groups()]
    assert names[0] >= {e.option for e in registry.BUILTIN}
    assert names[1] == set(_yaml_names("packager")) and names[2] == set(_yaml_names("launcher"))
    assert names[3] == set(SANDBOXES)
    sandbox_line = re.search(r" sandbox a real backend on this machine: (.*?) options:", text).group(1)
    assert set(sandbox_line.split(", ")) == set(SANDBOXES)  # the command's own one-line help
    for cmd in ("results", "plot", "completion"):
        assert f" {cmd} " in text


def test_sandbox_help_lists_every_sandbox_and_rejects_others():
    out = nrun("sandbox", "--help")
    assert out.returncode == 0
    assert all(name in out.stdout for name in SANDBOXES) and "ssh" in out.stdout
    bad = nrun("sandbox", "nosuch", "status")
    assert bad.returncode == 2 and all(name in bad.stderr for name in SANDBOXES)


def test_help_imports_no_backend_plotting_or_completion_library():
    code = ("import sys; from nrun_core import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([NRUN[0], "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(out.stdout.split())
    assert "hydra" not in loaded and "matplotlib" not in loaded and "argcomplete" not in loaded
    assert not [m for m in loaded if m.startswith("nrun_core.executors.") or m == "nrun_core.runner"]


@pytest.fixture(scope="module")
def one_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("completion")
    env = {"NRUN_HOME": str(tmp / "home")}
    run_app("sweep_app.py", "hydra/launcher=nrun_local", "x=1,2,3", cwd=tmp, env=env, check=True)
    sweep_id = json.loads(nrun("status", "--json", env=env).stdout)["sweep"]["id"]
    return env, sweep_id


def complete(env: dict, line: str) -> list:
    """What the shell would offer for LINE, asked as argcomplete's shell hook asks: the line in
    COMP_LINE/COMP_POINT, _ARGCOMPLETE=1, the answer on fd 8 (fd 9: its debug output)."""
    full = {**os.environ, **env, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line,
            "COMP_POINT": str(len(line)), "COMP_TYPE": "9"}
    script = '"$@" 8>&1 9>/dev/null'
    out = subprocess.run(["bash", "-c", script, "complete", *NRUN], capture_output=True, text=True,
                         timeout=60, env=full)
    assert out.returncode == 0, out.stderr
    return [w.strip() for w in out.stdout.split("\n") if w.strip()]


def test_completion_offers_real_sweep_ids_and_point_numbers(one_sweep):
    env, sweep_id = one_sweep
    assert {"last", sweep_id} <= set(complete(env, "nrun status "))
    assert complete(env, f"nrun logs {sweep_id[:9]}") == [sweep_id]
    assert [w for w in complete(env, f"nrun cancel {sweep_id} 1 ") if not w.startswith("-")] == ["0", "1", "2"]
    assert complete(env, "nrun show last 2") == ["2"]
    assert {"square", "-square", "-wall_s"} <= set(complete(env, "nrun results last --sort "))  # its dict keys
    assert set(complete(env, "nrun sandbox ")) >= set(SANDBOXES)
    assert complete(env, "nrun resu") == ["results"]


def test_completion_prints_a_hook_the_shell_accepts():
    out = nrun("completion", "bash")
    assert out.returncode == 0 and "_ARGCOMPLETE" in out.stdout
    if shutil.which("bash"):
        check = subprocess.run(["bash", "-c", 'eval "$1" && complete -p nrun', "sh", out.stdout],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0 and "nrun" in check.stdout, check.stderr
    assert nrun("completion", "zsh").returncode == 0
