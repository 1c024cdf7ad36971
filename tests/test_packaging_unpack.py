"""Unpacking on the executing side: crafted hostile archives are refused, good ones land once."""

from __future__ import annotations

import ast
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from nrun_core.errors import PackagingError
from nrun_core.packaging import UNPACK_SCRIPT, package, unpack


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NRUN_HOME", str(tmp_path / "nrun-home"))


def craft(path: Path, members: list[tuple[str, str, str | bytes]]) -> Path:
    """A .tar.gz with (type, name, data-or-linkname) members: type file|symlink|hardlink|fifo|chr|dir."""
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                raw = data.encode() if isinstance(data, str) else data
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                         "chr": tarfile.CHRTYPE, "dir": tarfile.DIRTYPE}[kind]
            info.linkname = str(data)
            tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("file", "ok.txt", "fine"), ("file", "../evil", "pwned")], r"member '../evil' has a '..' component"),
        ([("file", "a/../../evil", "pwned")], r"has a '..' component"),
        ([("file", "{abs}/abs_evil", "pwned")], r"has an absolute path"),
        ([("symlink", "etc", "/etc")], r"link 'etc' -> '/etc' points to an absolute path"),
        ([("symlink", "up", "../../outside")], r"link 'up' -> '../../outside' points outside"),
        ([("symlink", "x/y/l", "../.."), ("symlink", "a", "x/y/l/.."), ("file", "a/evil", "pwned")], r"outside the destination"),
        ([("dir", "x/y", ""), ("symlink", "x/y/l", "../.."), ("symlink", "a", "x/y/l/..")], r"resolves outside"),
        ([("hardlink", "h", "../../etc/passwd")], r"'..' component"),
        ([("fifo", "pipe", "")], r"member 'pipe' is a device, fifo or other special file"),
        ([("chr", "null", "")], r"is a device, fifo"),
    ],
)
def test_hostile_archives_are_refused_and_nothing_lands(tmp_path: Path, members: list, reason: str) -> None:
    outside = tmp_path / "outside-target"
    outside.mkdir()
    members = [(k, n.format(abs=outside), d) for k, n, d in members]
    archive = craft(tmp_path / "evil.tar.gz", members)
    dest = tmp_path / "work" / "dest"
    with pytest.raises(PackagingError, match=reason):
        unpack(archive, dest)
    assert not dest.exists()
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "work" / "evil").exists() and not (tmp_path / "evil").exists()
    assert [p.name for p in (tmp_path / "work").iterdir()] == []  # the temporary tree is gone too


def test_links_inside_the_tree_are_fine(tmp_path: Path) -> None:
    archive = craft(tmp_path / "ok.tar.gz", [
        ("file", "conf/base.yaml", "a: 1\n"), ("symlink", "default.yaml", "conf/base.yaml"),
        ("symlink", "conf/self", "."), ("file", "./dotted/x", "x"),
    ])
    dest = unpack(archive, tmp_path / "d")
    assert (dest / "default.yaml").read_text() == "a: 1\n"
    assert (dest / "dotted" / "x").read_text() == "x"


def _artifact(tmp_path: Path, text: str = "print('hi')\n") -> Path:
    src = tmp_path / f"src-{abs(hash(text))}"
    src.mkdir()
    (src / "train.py").write_text(text)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    art = package({"name": "workdir"}, source_dir=src)
    assert art is not None
    return art.path


def test_an_artifact_unpacks_once_and_a_second_call_is_a_no_op(tmp_path: Path) -> None:
    archive = _artifact(tmp_path)
    dest = unpack(archive, tmp_path / "job" / "code")
    assert (dest / "train.py").read_text() == "print('hi')\n"
    assert os.access(dest / "run.sh", os.X_OK)
    (dest / "train.py").write_text("touched")  # a no-op second call leaves dest alone
    assert unpack(archive, dest) == dest
    assert (dest / "train.py").read_text() == "touched"


def test_a_different_artifact_is_not_unpacked_over_another(tmp_path: Path) -> None:
    dest = unpack(_artifact(tmp_path, "v1\n"), tmp_path / "code")
    with pytest.raises(PackagingError, match=r"already holds something else.*Remove it or choose an empty directory"):
        unpack(_artifact(tmp_path, "v2\n"), dest)


def test_concurrent_unpacks_of_one_artifact_all_succeed(tmp_path: Path) -> None:
    archive = _artifact(tmp_path)
    dest = tmp_path / "shared" / "code"
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            unpack(archive, dest)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (dest / "train.py").read_text() == "print('hi')\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["code"]


def test_unpack_script_runs_alone_on_a_bare_python(tmp_path: Path) -> None:
    shipped = tmp_path / "remote" / "unpack.py"
    shipped.parent.mkdir()
    shutil.copy(UNPACK_SCRIPT, shipped)
    archive = _artifact(tmp_path)
    bare = [sys.executable, "-I", "-S", str(shipped)]  # isolated: no site-packages, no nrun on the path
    ok = subprocess.run([*bare, str(archive), str(tmp_path / "d")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "d" / "train.py").read_text() == "print('hi')\n"
    evil = craft(tmp_path / "evil.tar.gz", [("file", "../evil", "x")])
    bad = subprocess.run([*bare, str(evil), str(tmp_path / "e")], capture_output=True, text=True)
    assert bad.returncode == 2 and "'..' component" in bad.stderr


def test_unpack_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(UNPACK_SCRIPT.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    assert names - {"__future__"} <= set(sys.stdlib_module_names), names


def test_unpacked_root_is_readable_by_other_users(tmp_path, monkeypatch):
    """Containers may run the code as another uid (nrun_docker's user=...): the root must be 0755."""
    import stat

    from nrun_core.packaging import package, unpack

    monkeypatch.setenv("NRUN_HOME", str(tmp_path / "home"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    art = package({"name": "pattern", "include": ["*.py"]}, source_dir=tmp_path / "src")
    dest = unpack(art.path, tmp_path / "snap")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
