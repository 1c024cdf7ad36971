"""Artifacts under faults: Hydra's own outputs in a git tree, hostile or broken archives, bombs.

Real git repositories, real Hydra launches, real tarballs crafted byte by byte; nothing of nrun's
own is mocked.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT

from repos import git, isolate_git, make_repo, write

from nrun_core.errors import ConfigError, PackagingError
from nrun_core.packaging import UNPACK_SCRIPT, package, unpack
from nrun_core.packaging.unpack import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, MARKER

SECRET = "s3cr3t-token-value"
LOCAL = "hydra/launcher=nrun_local"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private NRUN_HOME, git without user config, and no unpack limits from the environment."""
    isolate_git(monkeypatch, tmp_path / "nrun-home")
    for var in ("NRUN_UNPACK_MAX_FILES", "NRUN_UNPACK_MAX_BYTES", "NRUN_UNPACK_MAX_FILE_BYTES"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "nrun-home"


def hydra_outputs(root: Path, sweep: str = "multirun/2026-01-01/12-00-00") -> None:
    """What Hydra leaves in the launch dir: a sweep dir with multirun.yaml, and an earlier single run."""
    write(root, {
        f"{sweep}/multirun.yaml": f"hydra:\n  overrides:\n    task: [api_key={SECRET}]\n",
        "outputs/2025-12-31/09-00-00/.hydra/config.yaml": f"api_key: {SECRET}\n",
        "outputs/2025-12-31/09-00-00/train.log": "loss 0.1\n",
    })


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isreg() else b"") for m in tar}  # type: ignore[union-attr]


def assert_no_outputs(archive: Path) -> None:
    found = members(archive)
    assert not [n for n in found if n.startswith(("multirun", "outputs", "sweeps"))], sorted(found)
    assert SECRET.encode() not in gzip.decompress(archive.read_bytes())


# --- 1. Hydra's outputs and the git packager -------------------------------------------------------


def test_git_first_sweep_is_not_dirty_because_of_hydras_own_sweep_dir(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"train.py": "print('hi')\n"})  # no .gitignore at all
    hydra_outputs(repo)
    art = package({"name": "git"}, source_dir=repo)
    assert art is not None and art.manifest["dirty"] is False and art.manifest["left_out"] == []
    assert sorted(members(art.path)) == ["train.py"]


def test_git_include_never_packs_outputs_or_their_secrets(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"train.py": "lr = 0.1\n"})
    hydra_outputs(repo)
    (repo / "train.py").write_text("lr = 0.2\n")
    write(repo, {"new.py": "new\n"})
    art = package({"name": "git", "on_dirty": "include"}, source_dir=repo)
    assert art.manifest["dirty_files"] == ["new.py", "train.py"]
    assert sorted(members(art.path)) == ["new.py", "train.py"]
    assert_no_outputs(art.path)


def test_git_custom_sweep_dir_is_left_out_when_the_caller_names_it(tmp_path: Path) -> None:
    """hydra.sweep.dir=sweeps/exp1 is not under a default pattern: extra_exclude names it."""
    repo = make_repo(tmp_path / "repo", {"train.py": "t\n"})
    write(repo, {"sweeps/exp1/multirun.yaml": f"key: {SECRET}\n", "sweeps/exp1/0/.hydra/config.yaml": SECRET})
    with pytest.raises(PackagingError, match=r"1 file is uncommitted: sweeps/.*\.exclude"):
        package({"name": "git"}, source_dir=repo)  # the fault, when the caller does not say
    art = package({"name": "git"}, source_dir=repo, extra_exclude=[repo / "sweeps" / "exp1"])
    assert art.manifest["dirty"] is False
    relative = package({"name": "git", "on_dirty": "include"}, source_dir=repo, extra_exclude=["sweeps/exp1"])
    assert relative.digest == art.digest
    write(repo, {"sweeps/notes.md": "a real untracked file beside the sweep dir\n"})
    with pytest.raises(PackagingError, match=r"1 file is uncommitted: sweeps/\. "):
        package({"name": "git"}, source_dir=repo, extra_exclude=[repo / "sweeps" / "exp1"])
    inc = package({"name": "git", "on_dirty": "include"}, source_dir=repo, extra_exclude=[repo / "sweeps" / "exp1"])
    assert sorted(members(inc.path)) == ["sweeps/notes.md", "train.py"]


def test_git_sweep_dir_with_glob_characters_is_matched_literally(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"train.py": "t\n"})
    write(repo, {"runs/a[1]*/multirun.yaml": SECRET, "runs/a1x/stray.py": "not a sweep dir\n"})
    with pytest.raises(PackagingError, match=r"1 file is uncommitted: runs/\. "):
        package({"name": "git"}, source_dir=repo, extra_exclude=[repo / "runs" / "a[1]*"])
    (repo / "runs" / "a1x" / "stray.py").unlink()
    assert package({"name": "git"}, source_dir=repo, extra_exclude=[repo / "runs" / "a[1]*"]).manifest["dirty"] is False


def test_git_committed_files_under_an_excluded_dir_are_packed_as_committed(tmp_path: Path) -> None:
    """outputs/README.md is committed code: packed as committed, never its uncommitted edits."""
    repo = make_repo(tmp_path / "repo", {"train.py": "t\n", "outputs/README.md": "committed\n",
                                         "outputs/gone.txt": "committed too\n", "outputs/tool.sh": "#!/bin/sh\n"})
    (repo / "outputs" / "tool.sh").chmod(0o755)
    git(repo, "commit", "-qam", "exec bit")
    (repo / "outputs" / "README.md").write_text("edited locally\n")
    (repo / "outputs" / "gone.txt").unlink()
    write(repo, {"outputs/staged.txt": "staged, never committed\n"})
    git(repo, "add", "outputs/staged.txt")
    clean = package({"name": "git"}, source_dir=repo)
    assert clean.manifest["dirty"] is False  # only excluded paths changed
    (repo / "train.py").write_text("t2\n")
    inc = package({"name": "git", "on_dirty": "include"}, source_dir=repo)
    assert inc.manifest["dirty_files"] == ["train.py"]
    got = members(inc.path)
    assert got == {"outputs/README.md": b"committed\n", "outputs/gone.txt": b"committed too\n",
                   "outputs/tool.sh": b"#!/bin/sh\n", "train.py": b"t2\n"}
    with tarfile.open(inc.path) as tar:
        assert tar.getmember("outputs/tool.sh").mode & 0o111
    assert members(clean.path)["outputs/README.md"] == b"committed\n"


def test_git_exclude_is_relative_to_subpath_and_can_be_turned_off(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"svc/app.py": "a\n"})
    hydra_outputs(repo / "svc")
    art = package({"name": "git", "subpath": "svc"}, source_dir=repo / "svc")
    assert art.manifest["dirty"] is False
    with pytest.raises(PackagingError, match=r"2 files are uncommitted: svc/multirun/, svc/outputs/"):
        package({"name": "git", "subpath": "svc", "exclude": []}, source_dir=repo / "svc")
    custom = package({"name": "git", "subpath": "svc", "exclude": ["multirun/", "/outputs/"], "on_dirty": "include"},
                     source_dir=repo / "svc")
    assert custom.digest == art.digest


def test_git_nrun_home_inside_the_repository_is_not_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo", {"train.py": "t\n"})
    monkeypatch.setenv("NRUN_HOME", str(repo / ".nrun-state"))
    write(repo, {".nrun-state/nrun.db": "store\n"})
    assert package({"name": "git"}, source_dir=repo).manifest["dirty"] is False


def test_git_exclude_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"packager.exclude=.*list of .gitignore-style patterns"):
        package({"name": "git", "exclude": [1]}, source_dir=tmp_path)


def test_workdir_pattern_and_hybrid_leave_out_the_callers_sweep_dir(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    write(src, {"train.py": "t\n", "exp/sweep1/multirun.yaml": SECRET, "exp/keep.py": "k\n"})
    hydra_outputs(src)
    sweep = src / "exp" / "sweep1"
    for cfg in ({"name": "workdir"}, {"name": "pattern"}):
        art = package(cfg, source_dir=src, extra_exclude=[sweep])
        assert sorted(members(art.path)) == ["exp/keep.py", "train.py"], cfg
        assert_no_outputs(art.path)
    hybrid = package({"name": "hybrid", "parts": {"code": {"name": "workdir"}, "more": {"name": "pattern"}}},
                     source_dir=src, extra_exclude=[sweep])
    assert sorted(members(hybrid.path)) == ["code/exp/keep.py", "code/train.py", "more/exp/keep.py", "more/train.py"]
    leaky = package({"name": "pattern", "exclude": []}, source_dir=src, extra_exclude=[sweep])
    assert "exp/sweep1/multirun.yaml" not in members(leaky.path)  # the sweep dir, even with exclude=[]


def test_workdir_exclude_follows_git_rules_a_negation_cannot_reinclude_below_an_excluded_dir(tmp_path: Path) -> None:
    src = tmp_path / "proj"
    write(src, {"train.py": "t\n", "multirun/keep.py": "k\n", "logs/a.log": "a\n", "logs/keep.log": "k\n"})
    art = package({"name": "workdir", "exclude": ["/multirun/", "!/multirun/keep.py", "*.log", "!keep.log"]},
                  source_dir=src)
    assert sorted(members(art.path)) == ["logs/keep.log", "train.py"]


def _hydra_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    write(repo, {"app.py": (
        "import hydra\n"
        "@hydra.main(version_base=None, config_path=None, config_name=None)\n"
        "def main(cfg):\n"
        "    return cfg.get('x')\n"
        "main()\n")})
    make_repo(repo, {})
    return repo


def _launch(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "app.py", "-m", LOCAL, "nrun/packager=git", "+x=1,2", f"+api_key={SECRET}", *args],
                          cwd=repo, check=False, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_hydra_sweeps_from_a_repo_that_does_not_ignore_multirun(tmp_path: Path, isolated: Path) -> None:
    """The reported fault, end to end: the first sweep failed as dirty because of its own multirun/."""
    repo = _hydra_repo(tmp_path)
    first = _launch(repo)
    assert first.returncode == 0, first.stderr
    assert list(repo.glob("multirun/*/*/multirun.yaml"))
    (repo / "app.py").write_text((repo / "app.py").read_text() + "# edited\n")
    second = _launch(repo, "hydra.launcher.packager.on_dirty=include")
    assert second.returncode == 0, second.stderr
    archives = list((isolated / "artifacts").glob("*.tar.gz"))
    assert len(archives) == 2
    for archive in archives:
        assert sorted(members(archive)) == ["app.py"]
        assert_no_outputs(archive)


def test_hydra_custom_sweep_dir_inside_the_repo_is_left_out(tmp_path: Path, isolated: Path) -> None:
    """Needs the launcher to pass its sweep dir as extra_exclude (it is not under a default pattern).

    Earlier sweeps in *other* custom dirs are not known to this launch: those need a pattern
    (e.g. exclude=[/outputs/,/multirun/,/sweeps/]) and the dirty-tree error says so.
    """
    repo = _hydra_repo(tmp_path)
    proc = _launch(repo, "hydra.sweep.dir=sweeps/exp1")
    assert proc.returncode == 0, proc.stderr
    (repo / "app.py").write_text((repo / "app.py").read_text() + "# edited\n")
    proc = _launch(repo, "hydra.sweep.dir=sweeps/exp1", "hydra.launcher.packager.on_dirty=include")
    assert proc.returncode == 0, proc.stderr
    other = _launch(repo, "hydra.sweep.dir=sweeps/exp2")
    assert other.returncode != 0 and "sweeps/" in other.stderr and "packager.exclude" in other.stderr
    archives = list((isolated / "artifacts").glob("*.tar.gz"))
    assert len(archives) == 2
    for archive in archives:
        assert_no_outputs(archive)


# --- 2. nrun's own names in an archive -----------------------------------------------------------


def craft(path: Path, members_: list[tuple], *, fmt: int = tarfile.PAX_FORMAT) -> Path:
    """A .tar.gz of (type, name, data-or-linkname[, {TarInfo attrs}]); types file|symlink|hardlink|dir."""
    with tarfile.open(path, "w:gz", format=fmt) as tar:
        for kind, name, data, *attrs in members_:
            info = tarfile.TarInfo(name)
            for key, value in (attrs[0] if attrs else {}).items():
                setattr(info, key, value)
            if kind == "file":
                raw = data.encode() if isinstance(data, str) else data
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE}[kind]
            info.linkname = data
            tar.addfile(info)
    return path


def refused(tmp_path: Path, archive: Path, match: str, **limits: int) -> None:
    """Unpacking raises a PackagingError matching ``match`` and leaves nothing behind."""
    dest = tmp_path / "work" / "dest"
    with pytest.raises(PackagingError, match=match):
        unpack(archive, dest, **limits)
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("entry", [
    ("dir", MARKER, ""), ("file", MARKER, "{}"), ("file", f"./{MARKER}/x", "x"),
    ("symlink", MARKER, "elsewhere"), ("file", ".NRUN-Unpacked", "x"),
])
def test_a_member_named_like_nruns_marker_is_refused(tmp_path: Path, entry: tuple) -> None:
    archive = craft(tmp_path / "a.tar.gz", [("file", "train.py", "t"), entry])
    refused(tmp_path, archive, r"member .* uses the name .*, which nrun keeps for itself.*rename or remove it")


def test_a_marker_name_below_the_root_is_just_a_file(tmp_path: Path) -> None:
    dest = unpack(craft(tmp_path / "a.tar.gz", [("file", f"sub/{MARKER}", "x")]), tmp_path / "d")
    assert (dest / "sub" / MARKER).read_text() == "x"


def test_packing_a_tree_with_the_marker_name_fails_at_pack_time(tmp_path: Path) -> None:
    write(tmp_path / "src", {"train.py": "t\n", MARKER: "mine\n"})
    with pytest.raises(PackagingError, match=rf"packager: the packed tree has '{MARKER}' at its root.*exclude"):
        package({"name": "workdir"}, source_dir=tmp_path / "src")


# --- 3. limits ------------------------------------------------------------------------------------


def test_default_limits_are_generous_for_code_trees() -> None:
    assert DEFAULT_MAX_FILES == 200_000 and DEFAULT_MAX_BYTES == 20 << 30


def _many(tmp_path: Path, n: int) -> Path:
    return craft(tmp_path / f"many{n}.tar.gz", [("file", f"f{i}.py", "x") for i in range(n)])


def test_member_count_limit_from_keyword_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _many(tmp_path, 12)
    refused(tmp_path, archive, rf"refusing {archive}: it holds more than 10 members \(limit NRUN_UNPACK_MAX_FILES=10\)"
                               r".*raise the limit where it is unpacked \(e.g. NRUN_UNPACK_MAX_FILES=20, or 0 for none\)",
            max_files=10)
    assert unpack(archive, tmp_path / "exact", max_files=12).is_dir()
    monkeypatch.setenv("NRUN_UNPACK_MAX_FILES", "11")
    with pytest.raises(PackagingError, match="more than 11 members"):
        unpack(archive, tmp_path / "env")
    assert unpack(archive, tmp_path / "kw-wins", max_files=100).is_dir()
    monkeypatch.setenv("NRUN_UNPACK_MAX_FILES", "0")  # 0: no limit
    assert unpack(archive, tmp_path / "none").is_dir()


def test_bad_limit_values_name_the_variable_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _many(tmp_path, 1)
    monkeypatch.setenv("NRUN_UNPACK_MAX_BYTES", "lots")
    with pytest.raises(PackagingError, match=r"NRUN_UNPACK_MAX_BYTES='lots' is not a valid limit.*e.g. NRUN_UNPACK_MAX_BYTES=40G"):
        unpack(archive, tmp_path / "d")
    monkeypatch.setenv("NRUN_UNPACK_MAX_BYTES", "1M")
    monkeypatch.setenv("NRUN_UNPACK_MAX_FILES", "2k")
    with pytest.raises(PackagingError, match=r"NRUN_UNPACK_MAX_FILES='2k' is not a valid limit; use a whole number "):
        unpack(archive, tmp_path / "d")
    monkeypatch.delenv("NRUN_UNPACK_MAX_FILES")
    assert unpack(archive, tmp_path / "d").is_dir()


def _bomb(path: Path, size: int, cut: float) -> Path:
    """A sound one-file archive followed by ``size`` zero bytes, gzipped, the gzip stream cut at ``cut``.

    tarfile stops reading at the end-of-archive block; the rest is read only to check that nothing
    follows, and that read must stop at the limit.
    """
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("train.py")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"t\n"))
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            gz.write(chunk)
    data = raw.getvalue()
    path.write_bytes(data[: int(len(data) * cut)])
    return path


def test_a_gzip_bomb_stops_at_the_byte_limit_while_streaming(tmp_path: Path) -> None:
    """64 MiB of zeros, the second half of the gzip stream cut off: a reader that went past the
    1 MiB limit would report truncation instead; the limit must trip first, whatever headers say."""
    archive = _bomb(tmp_path / "bomb.tar.gz", 64 << 20, cut=0.5)
    assert archive.stat().st_size < 200_000
    refused(tmp_path, archive, r"refusing .*bomb.tar.gz: it holds more than 1 MiB uncompressed "
                               r"\(limit NRUN_UNPACK_MAX_BYTES=1048576\).*raise the limit", max_bytes=1 << 20)
    whole = _bomb(tmp_path / "whole.tar.gz", 4 << 20, cut=1.0)
    refused(tmp_path, whole, r"data after the end-of-archive marker|more than", max_bytes=1 << 20)


def test_a_file_over_the_byte_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    archive = craft(tmp_path / "a.tar.gz", [("file", "small", "x"), ("file", "data.bin", bytes(3 << 20))])
    refused(tmp_path, archive, r"more than 2 MiB uncompressed \('data.bin' of 3 MiB at byte \d+\) "
                               r"\(limit NRUN_UNPACK_MAX_BYTES=2097152\)", max_bytes=2 << 20, max_file_bytes=4 << 20)


def test_a_header_claiming_a_huge_file_is_refused_before_any_byte_is_written(tmp_path: Path) -> None:
    """Default limits; the 30 GiB of data are not even in the archive: refused from the header."""
    info = tarfile.TarInfo("huge.bin")
    info.size = 30 << 30
    archive = tmp_path / "huge.tar.gz"
    archive.write_bytes(gzip.compress(info.tobuf(tarfile.PAX_FORMAT)))
    refused(tmp_path, archive, r"more than 20 GiB uncompressed \('huge.bin' of 30 GiB at byte \d+\) "
                               r"\(limit NRUN_UNPACK_MAX_BYTES=21474836480\)")


def test_per_file_limit(tmp_path: Path) -> None:
    archive = craft(tmp_path / "a.tar.gz", [("file", "small", "x" * 100), ("file", "big", "x" * 5000)])
    with pytest.raises(PackagingError, match=r"'big' of 5000 bytes \(limit NRUN_UNPACK_MAX_FILE_BYTES=4096\)"):
        unpack(archive, tmp_path / "d", max_file_bytes=4096)
    assert unpack(archive, tmp_path / "ok", max_file_bytes=5000).is_dir()


def test_a_forged_pax_header_cannot_fill_memory(tmp_path: Path) -> None:
    """A pax header is read whole by tarfile before any member is seen: it is refused by size."""
    huge = tmp_path / "pax.tar.gz"
    craft(huge, [("file", "a", "x", {"pax_headers": {"comment": "c" * (20 << 20)}})])
    refused(tmp_path, huge, r"a tar header at byte \d+ claims 20 MiB of metadata")
    medium = craft(tmp_path / "pax2.tar.gz", [("file", "a", "x", {"pax_headers": {"comment": "c" * (3 << 20)}})])
    with pytest.raises(PackagingError, match=r"more than 1 MiB uncompressed"):
        unpack(medium, tmp_path / "d", max_bytes=1 << 20)


def test_limits_reach_the_shipped_script_through_the_environment(tmp_path: Path) -> None:
    archive = _many(tmp_path, 5)
    env = {**os.environ, "NRUN_UNPACK_MAX_FILES": "3"}
    proc = subprocess.run([PYTHON, "-I", "-S", str(UNPACK_SCRIPT), str(archive), str(tmp_path / "d")], check=False,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "more than 3 members (limit NRUN_UNPACK_MAX_FILES=3)" in proc.stderr
    proc = subprocess.run([PYTHON, "-m", "nrun_core.packaging.unpack", str(archive), str(tmp_path / "d")],
                          check=False, capture_output=True, text=True, cwd=ROOT, env={**env, "NRUN_UNPACK_MAX_FILES": "5"})
    assert proc.returncode == 0, proc.stderr


# --- 4. other hostile or broken archives ----------------------------------------------------------


@pytest.mark.parametrize(("entries", "reason"), [
    ([("file", "a", "1"), ("file", "a", "2")], r"path 'a' appears twice \(a file, then a file\)"),
    ([("dir", "d", ""), ("symlink", "d", "e"), ("file", "d/x", "through the link")], r"path 'd' appears twice \(a dir, then a link\)"),
    ([("file", "a/b", "y"), ("file", "a", "x")], r"path 'a' appears twice \(a dir, then a file\)"),
    ([("file", "a", "x"), ("file", "a/b", "y")], r"member 'a/b' lies below 'a', which the archive made a file"),
    ([("symlink", "l", "."), ("file", "l/x", "through an inside link")], r"lies below 'l', which the archive made a link"),
    ([("file", "f", "x"), ("hardlink", "f", "f")], r"path 'f' appears twice"),
    ([("hardlink", "h", "later"), ("file", "later", "x")], r"hard link 'h' -> 'later' does not name a file earlier"),
    ([("dir", "d", ""), ("hardlink", "h", "d")], r"hard link 'h' -> 'd' does not name a file earlier"),
    ([("symlink", "a", "x/y/l/.."), ("symlink", "x/y/l", "../.."), ("hardlink", "h", "a/outside-target/secret")],
     r"hard link 'h' -> 'a/outside-target/secret' does not name a file earlier"),
    ([("file", "f", "x", {"type": tarfile.GNUTYPE_SPARSE})], r"'f' is a sparse file|device, fifo or other special"),
    ([("file", "f", "x", {"type": tarfile.BLKTYPE})], r"device, fifo or other special file"),
])
def test_more_hostile_archives_are_refused_and_nothing_lands(tmp_path: Path, entries: list, reason: str) -> None:
    outside = tmp_path / "work" / "outside-target"
    outside.mkdir(parents=True)
    (outside / "secret").write_text("precious")
    archive = craft(tmp_path / "evil.tar.gz", entries)
    with pytest.raises(PackagingError, match=reason):
        unpack(archive, tmp_path / "work" / "dest")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["outside-target"]
    assert (outside / "secret").read_text() == "precious" and (outside / "secret").stat().st_nlink == 1


def test_a_hard_link_to_an_earlier_file_is_fine(tmp_path: Path) -> None:
    dest = unpack(craft(tmp_path / "a.tar.gz", [("file", "a/f", "x"), ("hardlink", "b", "a/f")]), tmp_path / "d")
    assert (dest / "b").read_text() == "x"


def test_setuid_sticky_and_world_writable_bits_never_land(tmp_path: Path) -> None:
    archive = craft(tmp_path / "a.tar.gz", [
        ("dir", "d", "", {"mode": 0o7777}), ("file", "d/suid", "x", {"mode": 0o4777}),
        ("file", "d/sgid", "x", {"mode": 0o2666}), ("hardlink", "d/h", "d/suid", {"mode": 0o6777}),
    ])
    dest = unpack(archive, tmp_path / "d")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [dest / "d", *(dest / "d").iterdir()]}
    assert modes == {"d": 0o755, "suid": 0o755, "sgid": 0o644, "h": 0o755}


def test_out_of_range_timestamps_do_not_crash(tmp_path: Path) -> None:
    archive = craft(tmp_path / "a.tar.gz", [("file", "far", "x", {"mtime": 10**30}), ("file", "neg", "y", {"mtime": -5})])
    dest = unpack(archive, tmp_path / "d")
    assert (dest / "far").read_text() == "x" and (dest / "neg").read_text() == "y"


def _good(tmp_path: Path) -> bytes:
    return craft(tmp_path / "good.tar.gz", [("file", f"f{i}", os.urandom(2000).hex()) for i in range(20)]).read_bytes()


def test_a_truncated_artifact_is_refused_not_unpacked_partially(tmp_path: Path) -> None:
    data = _good(tmp_path)
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(data[: len(data) * 2 // 3])
    refused(tmp_path, archive, r"cut.tar.gz is truncated or corrupt \(EOFError.*copy it again")


def test_a_damaged_header_in_the_middle_is_refused_not_taken_as_the_end(tmp_path: Path) -> None:
    """tarfile ends quietly at a bad header after the first member; the artifact would land half."""
    raw = bytearray(gzip.decompress(_good(tmp_path)))
    second = raw.index(b"f1\0") - 0  # the name field of the second member's header (after pax)
    raw[second: second + 8] = b"\xff" * 8
    raw[second + 148: second + 156] = b"garbage!"  # its checksum too
    archive = tmp_path / "damaged.tar.gz"
    archive.write_bytes(gzip.compress(bytes(raw)))
    refused(tmp_path, archive, r"damaged.tar.gz is damaged after \d+ members")


def test_data_after_the_end_of_the_archive_is_refused(tmp_path: Path) -> None:
    raw = gzip.decompress(_good(tmp_path)) + b"appended junk" + bytes(500)
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(gzip.compress(raw))
    refused(tmp_path, archive, r"data after the end-of-archive marker")


def test_a_gzip_crc_error_is_refused(tmp_path: Path) -> None:
    data = bytearray(_good(tmp_path))
    data[-6] ^= 0xFF  # inside the CRC32 trailer
    archive = tmp_path / "crc.tar.gz"
    archive.write_bytes(bytes(data))
    refused(tmp_path, archive, r"crc.tar.gz is truncated or corrupt")


def test_an_unwritable_destination_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    with pytest.raises(PackagingError, match=r"cannot unpack into .*a-file/dest: .*choose a writable destination"):
        unpack(_many(tmp_path, 1), tmp_path / "a-file" / "dest")


def test_the_marker_is_written_last_and_never_through_a_link(tmp_path: Path) -> None:
    """An artifact of nrun's own making lands once; the marker is a plain file nrun wrote."""
    dest = unpack(_many(tmp_path, 3), tmp_path / "d")
    marker = dest / MARKER
    assert marker.is_file() and not marker.is_symlink() and '"identity"' in marker.read_text()
