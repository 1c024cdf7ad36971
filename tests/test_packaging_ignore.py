"""The workdir packager against git itself: `git check-ignore` and `git ls-files --others` are the oracle."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from nrun_core.errors import PackagingError
from nrun_core.packaging import package

TRICKY_GITIGNORE = """\
# a comment line, and a blank line next

*.log
!keep.log
build/
/top_only.txt
docs/**/*.tmp
logs/
!logs/important.log
cache/*
!cache/keep/
a/**/b.txt
**/gen/
*.py[cod]
\\#literal.txt
trailing.txt
data
!data/
tmp/**
!tmp/keep.txt
""".replace("trailing.txt\n", "trailing.txt   \n")  # git strips trailing spaces

TRICKY_FILES = [
    "app.log", "keep.log", "sub/x.log", "sub/deeper/y.log",
    "build/out.o", "src/build/x.o", "build.txt", "tools/build",
    "top_only.txt", "sub/top_only.txt",
    "docs/x.tmp", "docs/a/b/y.tmp", "docs/z.txt", "other/w.tmp",
    "logs/important.log", "logs/a.txt",
    "cache/a.bin", "cache/keep/k.bin",
    "a/b.txt", "a/x/y/b.txt", "a/c.txt",
    "gen/g.py", "pkg/gen/g.py", "gen.py",
    "m.py", "m.pyc", "m.pyo",
    "#literal.txt", "#comment.txt", "trailing.txt",
    "other/data", "data/f.txt", "sub/data", "sub/deeper/data",
    "secret.txt", "sub/secret.txt",
    "sub/anchored.txt", "sub/deeper/anchored.txt",
    "tmp/keep.txt", "tmp/x.txt", "tmp/sub/keep.txt",
    "selfish/a.txt", "unicode-ünï.txt", "with space.txt",
]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NRUN_HOME", str(tmp_path / "nrun-home"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)  # no personal core.excludesFile in the oracle
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def make_tree(root: Path, files: list[str], ignores: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"content of {rel}\n")
    for rel, text in ignores.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def git_keeps(cwd: Path) -> set[str]:
    """Oracle 1: the untracked files git does not ignore (nothing is tracked), relative to cwd."""
    out = subprocess.run(
        ["git", "-c", "core.quotepath=off", "ls-files", "-z", "--others", "--exclude-standard"],
        cwd=cwd, check=True, capture_output=True,
    ).stdout
    return {p.decode() for p in out.split(b"\0") if p}


def check_ignore_keeps(root: Path, paths: list[str]) -> set[str]:
    """Oracle 2: per-path verdicts of `git check-ignore -v -n` (a '!' pattern or no match = kept)."""
    out = subprocess.run(
        ["git", "check-ignore", "--no-index", "-z", "--stdin", "-v", "-n"], cwd=root,
        input=b"\0".join(p.encode() for p in paths) + b"\0", capture_output=True,
    ).stdout.split(b"\0")
    keeps = set()
    for i in range(0, len(out) - 1, 4):
        _source, _line, pattern, path = out[i : i + 4]
        if not pattern or pattern.startswith(b"!"):
            keeps.add(path.decode())
    return keeps


def packed(source: Path, base_dir: str = ".") -> set[str]:
    art = package({"name": "workdir", "base_dir": base_dir}, source_dir=source)
    return {p for p, _ in art.manifest["files"]}


@pytest.fixture
def tricky(tmp_path: Path) -> Path:
    root = tmp_path / "tricky"
    make_tree(root, TRICKY_FILES, {
        ".gitignore": TRICKY_GITIGNORE,
        "sub/.gitignore": "!*.log\n/anchored.txt\ndata\n",
        "sub/deeper/.gitignore": "!data\n",
        "selfish/.gitignore": "*\n",
        ".git/info/exclude": "secret.txt\n",
    })
    os.symlink("m.py", root / "link-to-m.py")
    return root


def test_workdir_agrees_with_git_on_a_tricky_fixture(tricky: Path) -> None:
    ours = packed(tricky)
    assert ours == git_keeps(tricky)
    all_paths = sorted(str(p.relative_to(tricky).as_posix()) for p in tricky.rglob("*")
                       if (p.is_file() or p.is_symlink()) and ".git" not in p.relative_to(tricky).parts)
    assert ours == check_ignore_keeps(tricky, all_paths)
    # the cases people get wrong, spelled out:
    assert "logs/important.log" not in ours  # negation under an excluded directory: not re-included
    assert "cache/keep/k.bin" in ours and "cache/a.bin" not in ours  # dir/* then !dir/sub/
    assert "tmp/keep.txt" in ours and "tmp/sub/keep.txt" not in ours
    assert "sub/x.log" in ours and "sub/deeper/y.log" in ours and "app.log" not in ours  # nested negation
    assert "tools/build" in ours and "src/build/x.o" not in ours  # build/ matches directories only
    assert "sub/top_only.txt" in ours and "top_only.txt" not in ours  # anchored
    assert "sub/deeper/data" in ours and "sub/data" not in ours and "other/data" not in ours
    assert "data/f.txt" in ours  # `data` then `!data/`: directories named data are back
    assert "secret.txt" not in ours  # .git/info/exclude
    assert not any(p.startswith("selfish/") for p in ours)
    assert "link-to-m.py" in ours and "unicode-ünï.txt" in ours and "with space.txt" in ours


def test_workdir_below_the_repository_root_applies_the_parents_rules(tricky: Path) -> None:
    assert packed(tricky / "sub") == git_keeps(tricky / "sub")
    assert packed(tricky, base_dir="sub") == git_keeps(tricky / "sub")


def test_workdir_whose_base_is_itself_ignored_says_so(tricky: Path) -> None:
    with pytest.raises(PackagingError, match=r"is itself ignored by the .gitignore rules"):
        packed(tricky / "logs")


def test_workdir_outside_any_repository_uses_its_own_gitignore(tmp_path: Path) -> None:
    root = tmp_path / "norepo"
    for rel in ("a.py", "b.log", "out/x"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / ".gitignore").write_text("*.log\nout/\n")
    assert packed(root) == {".gitignore", "a.py"}


def test_workdir_caller_position_is_the_workdir(tricky: Path) -> None:
    art = package({"name": "workdir", "base_dir": ".."}, source_dir=tricky / "sub")
    assert art.workdir == "sub"


PATTERN_POOL = [
    "*.log", "!*.log", "a/", "!a/", "a", "!a", "/a", "/a/", "b/*", "!b/c", "!b/c/", "**/c", "a/**/d",
    "*.txt", "!keep.txt", "d/", "!d/", "/b/", "c/*.txt", "**/a/b", "e*", "!e1", "b/**", "!b/**/",
    "a/b/", "**/d/*.log", "c", "!c", "x.txt", "/x.txt", "**/keep.txt", "b/**/", "*/", "!*/", "a/*/",
    "!**/c", "*", "!*.txt", "d/**/c", "/c/", "[ab]/", "?.log", "!a/b/c", "e1/",
]
DIRS = ["", "a", "b", "c", "d", "a/b", "b/c", "a/b/c", "d/a", "c/d/e1", "b/c/d"]
NAMES = ["x.txt", "keep.txt", "y.log", "a", "c", "e1", "d.log"]


@pytest.mark.parametrize("seed", range(int(os.environ.get("NRUN_IGNORE_SEEDS", "60"))))
def test_workdir_agrees_with_git_on_random_rule_sets(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    files = sorted({f"{d}/{n}".lstrip("/") for d in rng.sample(DIRS, 6) for n in rng.sample(NAMES, 3)})
    dirs_of_files = {f.rsplit("/", i)[0] for f in files for i in range(1, f.count("/") + 1)}
    files = [f for f in files if f not in dirs_of_files]  # a name cannot be both a file and a directory
    ignore_dirs = [""] + rng.sample(sorted({d for d in DIRS if d and any(f.startswith(d + "/") for f in files)}), 2)
    ignores = {f"{d}/.gitignore".lstrip("/"): "\n".join(rng.sample(PATTERN_POOL, rng.randint(1, 5))) + "\n" for d in ignore_dirs}
    root = tmp_path / "r"
    make_tree(root, files, ignores)
    expected = git_keeps(root)
    if not expected:
        with pytest.raises(PackagingError):
            packed(root)
        return
    assert packed(root) == expected, ignores


@pytest.mark.parametrize("seed", range(int(os.environ.get("NRUN_IGNORE_SEEDS", "60")) // 2))
def test_exclude_patterns_agree_with_git_below_a_subpath(tmp_path: Path, seed: int) -> None:
    """``exclude`` is judged twice: by git (``ls-files --exclude``, re-rooted at the subpath) for
    untracked files, by ``Excluder`` for tracked ones and for workdir. Both must agree."""
    from nrun_core.packaging.exclude import Excluder

    rng = random.Random(1000 + seed)
    files = sorted({f"{d}/{n}".lstrip("/") for d in rng.sample(DIRS, 6) for n in rng.sample(NAMES, 3)})
    dirs_of_files = {f.rsplit("/", i)[0] for f in files for i in range(1, f.count("/") + 1)}
    files = [f for f in files if f not in dirs_of_files]
    patterns = rng.sample(PATTERN_POOL, rng.randint(1, 5))
    sub = "s [p]"  # a subpath with a space and glob characters: re-rooting must escape it
    root = tmp_path / "r"
    make_tree(root, [f"{sub}/{f}" for f in files] + ["outside.txt"], {})
    ex = Excluder(root / sub, patterns)
    out = subprocess.run(
        ["git", "-c", "core.quotepath=off", "ls-files", "-z", "-o", *ex.git_args(sub), "--", sub],
        cwd=root, check=True, capture_output=True,
    ).stdout
    git_keeps_ = {p.decode()[len(sub) + 1:] for p in out.split(b"\0") if p}
    assert {f for f in files if not ex.excluded(f)} == git_keeps_, patterns
    if git_keeps_:
        art = package({"name": "workdir", "base_dir": sub, "exclude": patterns}, source_dir=root)
        assert {p for p, _ in art.manifest["files"]} == git_keeps_, patterns
