"""`nrun gc` on a real NRUN_HOME filled by real sweeps: the keep policy, the dry run, and what it
must never remove (what a live or kept sweep uses, what a launcher just packed or reused)."""

from __future__ import annotations

import os
import time
from pathlib import Path


from conftest import make_project, nrun, run_app, status_json, wait_for

LOCAL = "hydra/launcher=nrun_local"
WORKDIR = "nrun/packager=workdir"


def _sweep(proj: Path, content: str, *args: str) -> str:
    (proj / "version.py").write_text(f"V = {content!r}\n")  # a new tree: a new artifact
    run_app("sweep_app.py", LOCAL, WORKDIR, "x=1", *args, cwd=proj, check=True)
    return status_json()["sweep"]["id"]


def _artifact(sweep_id: str) -> str:
    return status_json(sweep_id)["sweep"]["artifact"]["digest"]


def _age(home: Path, hours: float = 2) -> None:
    """Everything in NRUN_HOME last used hours ago (outside gc's grace period)."""
    past = time.time() - hours * 3600
    for sub in ("artifacts", "snapshots", "runtime"):
        for p in (home / sub).rglob("*") if (home / sub).is_dir() else []:
            os.utime(p, (past, past), follow_symlinks=False)
        if (home / sub).is_dir():
            for p in (home / sub).iterdir():
                os.utime(p, (past, past), follow_symlinks=False)


def _present(home: Path, digest: str) -> bool:
    return (home / "artifacts" / f"{digest}.tar.gz").exists() and (home / "snapshots" / digest).is_dir()


def test_keep_policy_dry_run_then_removal(home, tmp_path):
    proj = make_project(tmp_path)
    ids = [_sweep(proj, v) for v in ("one", "two", "three")]
    digests = [_artifact(i) for i in ids]
    assert len(set(digests)) == 3 and all(_present(home, d) for d in digests)
    _age(home)

    dry = nrun("gc", "--keep-sweeps", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would free" in dry.stdout and "nothing was removed" in dry.stdout
    for i, d in zip(ids[:2], digests[:2]):
        assert i in dry.stdout and d in dry.stdout
    assert digests[2] not in dry.stdout
    assert all(_present(home, d) for d in digests)          # a dry run removes nothing
    assert ids[0] in nrun("list").stdout

    out = nrun("gc", "--keep-sweeps", "1")
    assert out.returncode == 0, out.stderr
    assert "freed" in out.stdout
    assert not any(_present(home, d) for d in digests[:2])
    assert _present(home, digests[2])                         # the kept sweep's artifact and snapshot
    listed = nrun("list").stdout
    assert ids[2] in listed and ids[0] not in listed and ids[1] not in listed
    gone = nrun("status", ids[0])
    assert gone.returncode != 0 and "no sweep matches" in gone.stderr
    # the kept sweep still resumes from its own records
    assert status_json(ids[2])["points"][0]["state"] == "COMPLETED"


def test_never_removes_what_a_live_sweep_or_a_launcher_uses(home, tmp_path):
    proj = make_project(tmp_path)
    old_id = _sweep(proj, "old")
    live_digest = _artifact(old_id)
    _age(home)
    # a detached sweep of the same tree reuses the old artifact (and touches it); age it again so
    # only its liveness protects it
    run_app("sweep_app.py", LOCAL, WORKDIR, "x=1", "action=sleep", "seconds=60", "hydra.launcher.wait=false",
            cwd=proj, check=True)
    live_id = status_json()["sweep"]["id"]
    staging = {sid: home / "skypilot" / sid for sid in (old_id, live_id, "20200101-000000-dead")}
    for d in staging.values():  # what nrun_skypilot stages per sweep (a dead launcher leaves it)
        d.mkdir(parents=True)
        (d / "points.json").write_text("{}")
        os.utime(d, (time.time() - 7200,) * 2)
    try:
        assert _artifact(live_id) == live_digest
        wait_for(lambda: status_json(live_id)["points"][0]["state"] == "RUNNING")
        _age(home)
        out = nrun("gc", "--keep-sweeps", "0", "--keep-days", "0")
        assert out.returncode == 0, out.stderr
        assert _present(home, live_digest)                    # the live sweep's
        assert live_id in nrun("list").stdout and old_id not in nrun("list").stdout
        assert staging[live_id].is_dir()                      # a live sweep's staging dir stays
        assert not staging[old_id].exists() and not staging["20200101-000000-dead"].exists()
    finally:
        nrun("cancel", live_id)
    # a tree packed a moment ago by a launcher that has not recorded its sweep yet
    from nrun_core.packaging import package

    (proj / "version.py").write_text("V = 'fresh'\n")
    fresh = package({"name": "workdir"}, source_dir=proj, extra_exclude=[proj / "multirun"])
    assert nrun("gc", "--keep-sweeps", "0", "--keep-days", "0").returncode == 0
    assert fresh.path.exists()                                # younger than the grace period
    _age(home)
    again = package({"name": "workdir"}, source_dir=proj, extra_exclude=[proj / "multirun"])
    assert again.digest == fresh.digest and again.manifest["reused"]
    assert nrun("gc", "--keep-sweeps", "0", "--keep-days", "0").returncode == 0
    assert fresh.path.exists()                                # reused: touched, so young again


def test_bad_policy_is_refused_with_the_fix(home, tmp_path):
    proj = make_project(tmp_path)
    _sweep(proj, "x")
    out = nrun("gc", "--keep-days", "-1")
    assert out.returncode != 0 and "--keep-days" in out.stderr and ">= 0" in out.stderr
