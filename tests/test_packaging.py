"""The packagers on real git repositories made in tmp dirs: what a user would check in the artifact."""

from __future__ import annotations

import logging
import os
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from repos import git, isolate_git, make_repo, write

from nrun_core.errors import ConfigError, PackagingError
from nrun_core.packaging import PACKAGERS, Artifact, package, unpack, validate
from nrun_core.packaging.config import DEFAULTS

CONF = Path(__file__).resolve().parents[1] / "conf" / "nrun" / "packager"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private NRUN_HOME, and git that reads no user or system config."""
    isolate_git(monkeypatch, tmp_path / "nrun-home")


def tree_of(art: Artifact, dest: Path) -> dict[str, str]:
    """Unpack and read back every file (symlinks as '-> target')."""
    unpack(art.path, dest)
    out = {}
    for p in sorted(dest.rglob("*")):
        rel = p.relative_to(dest).as_posix()
        if rel == ".nrun-unpacked":
            continue
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_text()
    return out


# --- git: content ---------------------------------------------------------------------------------


def test_submodules_are_included_recursively(tmp_path: Path) -> None:
    inner = make_repo(tmp_path / "inner", {"inner.py": "INNER = 1\n"})
    lib = make_repo(tmp_path / "lib", {"lib.py": "LIB = 1\n"})
    git(lib, "submodule", "add", "-q", str(inner), "vendor/inner")
    git(lib, "commit", "-qm", "add inner")
    app = make_repo(tmp_path / "app", {"train.py": "print('hi')\n"})
    git(app, "submodule", "add", "-q", str(lib), "third_party/lib")
    git(app, "commit", "-qm", "add lib")
    git(app, "submodule", "update", "--init", "--recursive", "-q")

    art = package({"name": "git"}, source_dir=app)

    files = tree_of(art, tmp_path / "out")
    assert files["train.py"] == "print('hi')\n"
    assert files["third_party/lib/lib.py"] == "LIB = 1\n"
    assert files["third_party/lib/vendor/inner/inner.py"] == "INNER = 1\n"
    listed = [p for p, _ in art.manifest["files"]]
    assert "third_party/lib/vendor/inner/inner.py" in listed
    assert not any(p.endswith("/.git") for p in listed)


def test_edits_inside_a_submodule_count_as_dirty_and_include_carries_them(tmp_path: Path) -> None:
    lib = make_repo(tmp_path / "lib", {"lib.py": "LIB = 1\n"})
    app = make_repo(tmp_path / "app", {"train.py": "x\n"})
    git(app, "submodule", "add", "-q", str(lib), "lib")
    git(app, "commit", "-qm", "add lib")
    (app / "lib" / "lib.py").write_text("LIB = 2  # edited in the submodule\n")
    with pytest.raises(PackagingError, match=r"1 file is uncommitted: lib\."):
        package({"name": "git"}, source_dir=app)
    art = package({"name": "git", "on_dirty": "include"}, source_dir=app)
    assert tree_of(art, tmp_path / "out")["lib/lib.py"] == "LIB = 2  # edited in the submodule\n"


def test_submodule_not_checked_out_is_refused_unless_submodules_false(tmp_path: Path) -> None:
    lib = make_repo(tmp_path / "lib", {"lib.py": "LIB = 1\n"})
    app = make_repo(tmp_path / "app", {"train.py": "x\n"})
    git(app, "submodule", "add", "-q", str(lib), "lib")
    git(app, "commit", "-qm", "add lib")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(app), str(clone))  # submodule registered but not checked out

    with pytest.raises(PackagingError) as e:
        package({"name": "git"}, source_dir=clone)
    assert "submodule lib" in str(e.value) and "git submodule update --init --recursive" in str(e.value)
    assert "submodules=false" in str(e.value)

    art = package({"name": "git", "submodules": False}, source_dir=clone)
    assert "lib/lib.py" not in tree_of(art, tmp_path / "out")


def test_subpath_is_the_artifact_root_and_cwd_below_it_is_the_workdir(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "mono", {
        "services/trainer/train.py": "T\n", "services/trainer/conf/a.yaml": "a: 1\n", "other/big.bin": "B\n",
    })
    art = package({"name": "git", "subpath": "services/trainer"}, source_dir=repo)
    assert tree_of(art, tmp_path / "o1") == {"train.py": "T\n", "conf/a.yaml": "a: 1\n"}
    assert art.workdir == ""

    from_conf = package({"name": "git", "subpath": "services/trainer"}, source_dir=repo / "services/trainer/conf")
    assert from_conf.workdir == "conf"
    assert from_conf.digest == art.digest

    whole = package({"name": "git"}, source_dir=repo / "services" / "trainer")
    assert whole.workdir == "services/trainer"
    assert "other/big.bin" in tree_of(whole, tmp_path / "o2")


def test_subpath_that_does_not_exist_or_is_a_file_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a/x.py": "x\n"})
    with pytest.raises(PackagingError, match=r"subpath='nope' does not exist at HEAD"):
        package({"name": "git", "subpath": "nope"}, source_dir=repo)
    with pytest.raises(PackagingError, match=r"subpath='a/x.py' is a file"):
        package({"name": "git", "subpath": "a/x.py"}, source_dir=repo)


# --- git: dirty-tree policy -----------------------------------------------------------------------


@pytest.fixture
def dirty_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo", {
        ".gitignore": "*.log\noutputs/\n", "train.py": "lr = 0.1\n", "old.py": "old\n", "util.py": "u\n",
    })
    (repo / "train.py").write_text("lr = 0.2  # edited\n")
    (repo / "old.py").unlink()
    write(repo, {"new_module.py": "new\n", "run.log": "noise\n", "outputs/ckpt.bin": "weights\n"})
    return repo


def test_dirty_tree_is_refused_by_default_naming_the_files_and_the_ways_out(dirty_repo: Path) -> None:
    with pytest.raises(PackagingError) as e:
        package({"name": "git"}, source_dir=dirty_repo)
    msg = str(e.value)
    assert msg.startswith("hydra.launcher.packager.on_dirty=error: 3 files are uncommitted: ")
    for name in ("train.py", "old.py", "new_module.py"):
        assert name in msg
    assert "run.log" not in msg and "outputs" not in msg  # ignored files are not "dirty"
    assert "on_dirty=include" in msg and "on_dirty=warn" in msg and "Commit them" in msg
    assert not list((dirty_repo.parent / "nrun-home").glob("artifacts/*.tar.gz"))


def test_include_packs_the_working_tree_honouring_gitignore(dirty_repo: Path, tmp_path: Path) -> None:
    art = package({"name": "git", "on_dirty": "include"}, source_dir=dirty_repo)
    files = tree_of(art, tmp_path / "out")
    assert files == {
        ".gitignore": "*.log\noutputs/\n", "train.py": "lr = 0.2  # edited\n",
        "util.py": "u\n", "new_module.py": "new\n",
    }
    m = art.manifest
    assert m["dirty"] is True
    assert m["dirty_files"] == ["new_module.py", "old.py", "train.py"]
    assert m["commit"] == git(dirty_repo, "rev-parse", "HEAD")


def test_warn_packs_head_and_records_what_was_left_out(
    dirty_repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="nrun.packaging"):
        art = package({"name": "git", "on_dirty": "warn"}, source_dir=dirty_repo)
    assert tree_of(art, tmp_path / "out") == {
        ".gitignore": "*.log\noutputs/\n", "train.py": "lr = 0.1\n", "old.py": "old\n", "util.py": "u\n",
    }
    assert art.manifest["dirty"] is False and art.manifest["dirty_files"] == []
    assert art.manifest["left_out"] == ["new_module.py", "old.py", "train.py"]
    assert "leaving out 3 uncommitted file(s): new_module.py, old.py, train.py" in caplog.text


def test_ignored_untracked_files_do_not_make_a_tree_dirty_and_are_not_packed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {".gitignore": "__pycache__/\n*.ckpt\n", "m.py": "m\n"})
    write(repo, {"__pycache__/m.cpython-311.pyc": "bytecode", "best.ckpt": "weights"})
    art = package({"name": "git"}, source_dir=repo)
    assert sorted(tree_of(art, tmp_path / "out")) == [".gitignore", "m.py"]


def test_dirty_files_outside_subpath_do_not_block(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"svc/a.py": "a\n", "notes.md": "n\n"})
    (repo / "notes.md").write_text("edited\n")
    art = package({"name": "git", "subpath": "svc"}, source_dir=repo)
    assert art.manifest["dirty"] is False


def test_an_explicit_older_ref_is_packed_as_committed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"v.py": "VERSION = 1\n"})
    git(repo, "tag", "v1")
    (repo / "v.py").write_text("VERSION = 2\n")
    git(repo, "commit", "-qam", "v2")
    (repo / "v.py").write_text("VERSION = 3  # uncommitted\n")
    art = package({"name": "git", "ref": "v1"}, source_dir=repo)
    assert tree_of(art, tmp_path / "out") == {"v.py": "VERSION = 1\n"}
    assert art.manifest["commit"] == git(repo, "rev-parse", "v1")
    with pytest.raises(PackagingError, match="on_dirty=include packs the working tree"):
        package({"name": "git", "ref": "v1", "on_dirty": "include"}, source_dir=repo)


def test_git_errors_say_what_to_do(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(PackagingError, match="not inside a git repository.*packager=workdir"):
        package({"name": "git"}, source_dir=plain)
    git(plain, "init", "-q")
    with pytest.raises(PackagingError, match="has no commits yet"):
        package({"name": "git"}, source_dir=plain)
    repo = make_repo(tmp_path / "r", {"a": "a"})
    with pytest.raises(PackagingError, match=r"ref='nosuchbranch' is not a commit"):
        package({"name": "git", "ref": "nosuchbranch"}, source_dir=repo)


def test_export_ignore_is_honoured_and_the_manifest_matches_the_archive(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {".gitattributes": "secrets.txt export-ignore\n", "a.py": "a\n", "secrets.txt": "s\n"})
    art = package({"name": "git"}, source_dir=repo)
    assert "secrets.txt" not in tree_of(art, tmp_path / "out")
    with tarfile.open(art.path) as tar:
        archived = sorted(m.name for m in tar if m.isfile())
    assert [p for p, _ in art.manifest["files"]] == archived == [".gitattributes", "a.py"]


def test_symlinks_inside_are_kept_and_links_outside_are_refused_at_pack_time(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"conf/base.yaml": "a: 1\n"})
    os.symlink("conf/base.yaml", repo / "default.yaml")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "link")
    assert tree_of(package({"name": "git"}, source_dir=repo), tmp_path / "o")["default.yaml"] == "-> conf/base.yaml"

    os.symlink("/etc/passwd", repo / "escape")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "bad link")
    with pytest.raises(PackagingError, match=r"escape -> /etc/passwd"):
        package({"name": "git"}, source_dir=repo)


# --- reuse and change detection -------------------------------------------------------------------


def test_unchanged_tree_reuses_the_artifact_without_repacking(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {f"pkg/m{i}.py": f"x = {i}\n" for i in range(200)})
    first = package({"name": "git"}, source_dir=repo)
    stamp = first.path.stat().st_ino  # a rewrite is a new file renamed into place (the mtime is touched on reuse)
    t0 = time.perf_counter()
    second = package({"name": "git"}, source_dir=repo)
    warm = time.perf_counter() - t0
    assert (second.path, second.digest) == (first.path, first.digest)
    assert first.manifest["reused"] is False and second.manifest["reused"] is True
    assert second.path.stat().st_ino == stamp  # not rewritten
    assert warm < 0.5, f"warm re-launch took {warm:.3f}s"
    assert len(list(first.path.parent.glob("*.tar.gz"))) == 1


def test_every_kind_of_change_gives_a_new_artifact(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.py": "aaaa\n", "run.sh": "echo\n"})
    digests = {package({"name": "git"}, source_dir=repo).digest}

    def committed(change) -> str:
        change()
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "change")
        return package({"name": "git"}, source_dir=repo).digest

    for change in (
        lambda: (repo / "a.py").write_text("aaab\n"),  # content, same size
        lambda: (repo / "run.sh").chmod(0o755),  # executable bit
        lambda: (repo / "a.py").rename(repo / "b.py"),  # path
        lambda: write(repo, {"new.txt": ""}),  # an empty new file
    ):
        digest = committed(change)
        assert digest not in digests
        digests.add(digest)


def test_working_tree_edit_keeping_size_and_mtime_gives_a_new_artifact(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.py": "x = 1\n", "b.py": "b\n"})
    (repo / "b.py").write_text("b2\n")
    cfg = {"name": "git", "on_dirty": "include"}
    first = package(cfg, source_dir=repo)
    assert package(cfg, source_dir=repo).digest == first.digest
    st = (repo / "a.py").stat()
    (repo / "a.py").write_text("x = 2\n")  # same size...
    os.utime(repo / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and same mtime
    second = package(cfg, source_dir=repo)
    assert second.digest != first.digest
    assert tree_of(second, tmp_path / "out")["a.py"] == "x = 2\n"


def test_same_content_gives_the_same_digest_whichever_packager_reads_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {".gitignore": "*.tmp\n", "src/a.py": "a\n", "tool.sh": "#!/bin/sh\n"})
    (repo / "tool.sh").chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "exec")
    write(repo, {"scratch.tmp": "ignored"})
    by_git = package({"name": "git"}, source_dir=repo)
    by_workdir = package({"name": "workdir"}, source_dir=repo)
    assert by_git.digest == by_workdir.digest
    assert by_workdir.manifest["reused"] is True


# --- manifest and API ----------------------------------------------------------------------------


def test_manifest_names_commit_files_sizes_digest_and_config(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.py": "12345\n", "d/b.txt": "xy"})
    art = package({"name": "git"}, source_dir=repo)
    m = art.manifest
    assert m["commit"] == git(repo, "rev-parse", "HEAD")
    assert m["files"] == [["a.py", 6], ["d/b.txt", 2]]
    assert (m["file_count"], m["total_bytes"]) == (2, 8)
    assert m["digest"] == art.digest and art.path.name == f"{art.digest}.tar.gz"
    assert art.path.parent == tmp_path / "nrun-home" / "artifacts"
    assert m["packager"] == {
        "name": "git", "ref": "HEAD", "subpath": "", "submodules": True, "on_dirty": "error",
        "exclude": ["/outputs/", "/multirun/"],
    }
    import json

    assert json.loads(json.dumps(m)) == m


def test_passthrough_produces_no_artifact(tmp_path: Path) -> None:
    assert package({"name": "passthrough"}, source_dir=tmp_path) is None
    assert not (tmp_path / "nrun-home").exists()


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({"name": "gti"}, r"name='gti' is not a packager; choose one of passthrough, git, pattern, hybrid, workdir.*did you mean git"),
        ({"name": "git", "on_dirt": "warn"}, r"packager.on_dirt: unknown key for packager git; valid keys: name, ref, subpath, submodules, on_dirty.*did you mean on_dirty"),
        ({"name": "git", "on_dirty": "ignore"}, r"on_dirty='ignore' is not a policy; use error .* warn .* include"),
        ({"name": "git", "subpath": "../elsewhere"}, r"subpath='../elsewhere' escapes the repository"),
        ({"name": "git", "subpath": "/abs"}, r"subpath='/abs' escapes the repository"),
        ({"name": "git", "ref": "--output=/tmp/x"}, r"ref='--output=/tmp/x' is not a git ref"),
        ({"name": "git", "submodules": "yes"}, r"submodules must be true or false"),
        ({"name": "pattern", "include": []}, r"include is empty"),
        ({"name": "pattern", "include": [1]}, r"include must be a list of glob strings"),
        ({"name": "hybrid"}, r"parts must map subfolder names to packagers"),
        ({"name": "hybrid", "parts": {"code": {"name": "git", "bogus": 1}}}, r"packager.parts.code.bogus: unknown key for packager git"),
        ({"name": "hybrid", "parts": {"../up": {"name": "git"}}}, r"parts.../up: part names are subfolders"),
        ({"name": "hybrid", "parts": {"x": {"name": "passthrough"}}}, r"parts.x: passthrough packs nothing"),
        ({"name": "hybrid", "parts": {"x": {"name": "git"}}, "workdir_from": "y"}, r"workdir_from='y' is not a part"),
        ({"ref": "HEAD"}, r"name=None is not a packager"),
    ],
)
def test_validate_names_the_setting_and_the_fix(cfg: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        validate(cfg)


def test_yaml_configs_are_plain_mappings_of_every_option_with_its_default() -> None:
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(PACKAGERS) == sorted(DEFAULTS)
    for name in PACKAGERS:
        text = (CONF / f"{name}.yaml").read_text()
        assert text.startswith("# @package hydra.launcher.packager\n") and "defaults:" not in text
        cfg = yaml.safe_load(text)
        assert next(iter(cfg)) == "name" and cfg == DEFAULTS[name], name
        for key in cfg:
            if key != "name":
                line = next(ln for ln in text.splitlines() if ln.startswith(f"{key}:"))
                assert "#" in line, f"{name}.yaml: {key} has no comment"
        if name != "hybrid":
            validate(cfg)


def test_hydra_composes_the_packager_group_with_overrides() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF.parents[1]), version_base=None):
        cfg = compose(overrides=["+nrun/packager@pk=git", "pk.on_dirty=warn"])
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg.pk)
    validate(plain)
    assert plain["on_dirty"] == "warn" and plain["ref"] == "HEAD"


# --- pattern and hybrid --------------------------------------------------------------------------


def test_pattern_packs_globs_relative_to_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "proj", {
        "train.py": "t", "models/net.py": "n", "models/test_net.py": "tn", "conf/a.yaml": "a",
        "data/big.csv": "d", ".git/config": "not a repo, but never packed",
    })
    art = package(
        {"name": "pattern", "base_dir": "proj", "include": ["*.py", "conf/**"], "exclude": ["test_*.py", "data/"]},
        source_dir=tmp_path,
    )
    assert sorted(tree_of(art, tmp_path / "out")) == ["conf/a.yaml", "models/net.py", "train.py"]
    assert art.manifest["commit"] is None and art.workdir == ""
    with pytest.raises(PackagingError, match=r"include=\['\*.rs'\]: no file under .* matches"):
        package({"name": "pattern", "base_dir": "proj", "include": ["*.rs"]}, source_dir=tmp_path)


def test_pattern_default_includes_everything(tmp_path: Path) -> None:
    write(tmp_path / "p", {"a.py": "a", "deep/er/b.txt": "b"})
    art = package({"name": "pattern"}, source_dir=tmp_path / "p")
    assert sorted(tree_of(art, tmp_path / "out")) == ["a.py", "deep/er/b.txt"]


def test_hybrid_puts_parts_under_subfolders_and_runs_from_the_first(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": "t\n", "src/m.py": "m\n"})
    write(tmp_path / "extra", {"vocab.txt": "v\n", "notes.md": "n\n"})
    cfg = {"name": "hybrid", "parts": {
        "code": {"name": "git"},
        "assets": {"name": "pattern", "base_dir": "../../extra", "include": ["*.txt"]},
    }}
    art = package(cfg, source_dir=repo / "src")
    assert tree_of(art, tmp_path / "out") == {"code/train.py": "t\n", "code/src/m.py": "m\n", "assets/vocab.txt": "v\n"}
    assert art.workdir == "code/src"
    assert art.manifest["commit"] == git(repo, "rev-parse", "HEAD")
    assert set(art.manifest["parts"]) == {"code", "assets"}
    assert package(cfg, source_dir=repo / "src").manifest["reused"] is True
    cfg["parts"]["assets"]["base_dir"] = "../nowhere"
    with pytest.raises(PackagingError, match=r"^hydra.launcher.packager.parts.assets.base_dir='../nowhere'"):
        package(cfg, source_dir=repo / "src")


def test_hybrid_merge_puts_parts_at_the_root_and_refuses_conflicts(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": "t\n", "conf/a.yaml": "a: 1\n"})
    write(tmp_path / "extra", {"conf/b.yaml": "b: 1\n", "conf/a.yaml": "a: 2\n"})
    ok = {"name": "hybrid", "merge": True, "parts": {
        "code": {"name": "git"}, "extra": {"name": "pattern", "base_dir": "../extra", "include": ["conf/b.yaml"]},
    }}
    art = package(ok, source_dir=repo)
    assert tree_of(art, tmp_path / "out") == {"train.py": "t\n", "conf/a.yaml": "a: 1\n", "conf/b.yaml": "b: 1\n"}
    bad = {**ok, "parts": {**ok["parts"], "extra": {"name": "pattern", "base_dir": "../extra"}}}
    with pytest.raises(PackagingError, match=r"code and extra both contain 'conf/a.yaml'.*merge=false"):
        package(bad, source_dir=repo)


def test_workdir_leaves_out_hydra_outputs_and_nrun_home(tmp_path, monkeypatch):
    """Sweeps launched again from the same directory reuse one artifact: earlier outputs stay out."""
    from nrun_core.packaging import package

    src = tmp_path / "proj"
    (src / "multirun" / "2026-01-01" / "0").mkdir(parents=True)
    (src / "multirun" / "2026-01-01" / "0" / "out.txt").write_text("old output")
    (src / "outputs").mkdir()
    (src / "outputs" / "o.txt").write_text("old run")
    (src / "state").mkdir()
    (src / "state" / "nrun.db").write_text("store")
    (src / "data").mkdir()
    (src / "data" / "big.ckpt").write_text("weights")
    (src / "train.py").write_text("print('hi')\n")
    monkeypatch.setenv("NRUN_HOME", str(src / "state"))
    first = package({"name": "workdir", "exclude": ["/outputs/", "/multirun/", "*.ckpt"]}, source_dir=src)
    assert [f[0] for f in first.manifest["files"]] == ["train.py"]
    (src / "multirun" / "2026-01-02").mkdir()
    (src / "multirun" / "2026-01-02" / "new.txt").write_text("another sweep's output")
    again = package({"name": "workdir", "exclude": ["/outputs/", "/multirun/", "*.ckpt"]}, source_dir=src)
    assert again.digest == first.digest


# --- workdir: warm re-launch from the walk record ---------------------------------------------------


def _age(root: Path, seconds: float = 30) -> None:
    """Every file and directory last changed `seconds` ago: out of the racy window, as a tree
    edited a while before the launch is."""
    past = time.time_ns() - int(seconds * 1e9)
    for p in [root, *root.rglob("*")]:
        if ".git" not in p.relative_to(root).parts:
            os.utime(p, ns=(past, past), follow_symlinks=False)


def test_workdir_warm_relaunch_sees_every_kind_of_change(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {".gitignore": "*.log\n", "a.py": "aaaa\n", "pkg/b.py": "b\n", "pkg/deep/c.py": "c\n"})
    cfg = {"name": "workdir"}

    def relaunch() -> Artifact:
        _age(repo)
        return package(cfg, source_dir=repo)

    first = relaunch()
    again = relaunch()
    assert again.digest == first.digest and again.manifest["reused"] is True
    assert again.manifest["files"] == first.manifest["files"] and again.manifest["commit"] == first.manifest["commit"]
    assert list((Path(os.environ["NRUN_HOME"]) / "artifacts" / "walk").iterdir())  # the record it reused
    for change, check, new_digest in (
        (lambda: write(repo, {"pkg/deep/new.py": "n\n"}), lambda f: f["pkg/deep/new.py"] == "n\n", True),  # new, deep
        (lambda: (repo / "pkg" / "b.py").unlink(), lambda f: "pkg/b.py" not in f, True),                  # removed
        (lambda: (repo / "a.py").write_text("aaab\n"), lambda f: f["a.py"] == "aaab\n", True),            # same size
        (lambda: write(repo, {".gitignore": "*.log\nnew.py\n"}), lambda f: "pkg/deep/new.py" not in f, True),  # rules
        (lambda: write(repo, {"pkg/deep/x.log": "ignored"}), lambda f: "pkg/deep/x.log" not in f, False),  # ignored
        (lambda: (repo / "pkg" / "deep" / "c.py").chmod(0o755), lambda f: True, True),                    # mode only
    ):
        before = relaunch()
        change()
        art = relaunch()
        assert check(tree_of(art, tmp_path / f"out-{art.digest[:8]}-{time.time_ns()}"))
        assert (art.digest != before.digest) == new_digest
    # a commit changes the manifest's commit even though no packed byte changed
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "more")
    art = relaunch()
    assert art.manifest["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert art.manifest["dirty"] is False


def test_workdir_warm_relaunch_never_trusts_a_racy_stat(tmp_path: Path) -> None:
    """A file whose stat still matches the record but that changed within the timestamp
    granularity of the record (git's "racily clean" entries) is re-hashed, never trusted."""
    from nrun_core.packaging import walkcache
    from nrun_core.packaging.fstree import RACY_NS

    f = tmp_path / "f.py"
    f.write_text("x\n")
    st = os.lstat(f)
    rec = {"abs": [str(f)], "sigs": [walkcache.sig(st)], "written_ns": st.st_mtime_ns + 1}
    assert walkcache.unchanged_files(rec) is False            # modified just before the record: racy
    rec["written_ns"] = st.st_mtime_ns + RACY_NS + 1
    assert walkcache.unchanged_files(rec) is True             # well before it: trusted
    f.write_text("y\n")
    assert walkcache.unchanged_files(rec) is False            # any stat change: re-read
    f.unlink()
    assert walkcache.unchanged_files(rec) is None


def test_workdir_relaunch_right_after_an_edit_repacks_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.py": "x = 1\n", "b.py": "b\n"})
    first = package({"name": "workdir"}, source_dir=repo)   # everything is fresh: nothing trusted yet
    st = (repo / "a.py").stat()
    (repo / "a.py").write_text("x = 2\n")
    os.utime(repo / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime
    second = package({"name": "workdir"}, source_dir=repo)
    assert second.digest != first.digest
    assert tree_of(second, tmp_path / "out")["a.py"] == "x = 2\n"


def test_workdir_record_follows_this_launchs_output_dirs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.py": "a\n"})
    write(repo, {"runs/1/out.txt": "old outputs", "multirun/1/x.txt": "x"})
    _age(repo)
    one = package({"name": "workdir"}, source_dir=repo, extra_exclude=[repo / "runs" / "1"])
    assert [p for p, _ in one.manifest["files"]] == ["a.py"]
    _age(repo)
    two = package({"name": "workdir"}, source_dir=repo, extra_exclude=[repo / "runs" / "2"])
    assert "runs/1/out.txt" in {p for p, _ in two.manifest["files"]}  # as a full walk says
    _age(repo)  # inside /multirun/ (excluded by default) another sweep dir changes nothing
    three = package({"name": "workdir"}, source_dir=repo, extra_exclude=[repo / "multirun" / "1"])
    four = package({"name": "workdir"}, source_dir=repo, extra_exclude=[repo / "multirun" / "2"])
    assert three.digest == four.digest and four.manifest["reused"]
