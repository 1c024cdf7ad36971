"""Build (once per machine) the kube-apiserver the kube sandbox runs, from Debian's source package.

No registry ships a Kubernetes control plane binary; Debian's ``kubernetes`` source package
(1.20.x) carries the whole tree with ``vendor/``, and Debian's Go builds it offline. The vendored
``modern-go/reflect2`` 1.0.1 crashes under Go >= 1.18 on the first custom-resource write, so it is
swapped for Debian's 1.0.2 sources before building. The binary is cached in
``cache_dir()/kube`` (outside the sandbox state, so ``down --purge`` and fresh clones keep it),
named after a hash of this recipe; the 1.5 GB build tree is removed afterwards.

``python -m nrun_core.sandbox.kube_build`` builds it ahead of time (prints the binary's path).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nrun_core.errors import SandboxError
from nrun_core.paths import cache_dir
from nrun_core.sandbox import _proc

TOOL_PACKAGES = ("golang-go", "etcd-server", "golang-github-modern-go-reflect2-dev")
REFLECT2_SRC = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
SOURCE_PACKAGE = "kubernetes"
DEFAULT_DEB_SRC = ("deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                   "http://deb.debian.org/debian bookworm main")
MAKE_ARGS = ("WHAT=cmd/kube-apiserver",)
BUILD_ENV = {"GOPROXY": "off", "GOFLAGS": "-mod=vendor", "GO111MODULE": "on",
             "CGO_ENABLED": "0", "KUBE_GIT_VERSION": "v1.20.2",
             "KUBE_GIT_TREE_STATE": "clean"}
# Bump when anything above changes the produced binary: the cached one is then rebuilt.
RECIPE_VERSION = 1


def recipe() -> dict[str, object]:
    """Everything that decides what the build produces (its hash names the cached binary)."""
    return {"v": RECIPE_VERSION, "package": SOURCE_PACKAGE, "deb_src": deb_src_line(),
            "make": list(MAKE_ARGS), "env": BUILD_ENV, "reflect2": str(REFLECT2_SRC)}


def deb_src_line() -> str:
    """Where the source package comes from (``$NRUN_KUBE_DEB_SRC`` overrides the Debian mirror)."""
    return os.environ.get("NRUN_KUBE_DEB_SRC") or DEFAULT_DEB_SRC


def kube_cache() -> Path:
    """The machine-wide cache of built binaries and build logs."""
    path = cache_dir() / "kube"
    path.mkdir(parents=True, exist_ok=True)
    return path


def binary_path() -> Path:
    """Where the built kube-apiserver for the current recipe lives (it may not exist yet)."""
    digest = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]
    return kube_cache() / f"kube-apiserver-1.20-{digest}"


def build_log() -> Path:
    return kube_cache() / "build.log"


def _locked() -> contextlib.AbstractContextManager[None]:
    """One build at a time on the machine; a second caller waits and then finds the binary."""
    return _proc.locked(kube_cache() / "build.lock")


def _run(cmd: list[str], log: Path, *, env: dict[str, str] | None = None,
         cwd: Path | None = None, what: str) -> None:
    """Run CMD with its output appended to LOG; a failure names the step, the log and a fix."""
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%F %T')} $ {' '.join(cmd)}\n".encode())
        out.flush()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                               env=env or dict(os.environ), stdin=subprocess.DEVNULL)
    if code != 0:
        raise SandboxError(f"{what} failed (exit {code}); see {log}:\n{_tail(log)}\n"
                           "Fix: correct the cause above, then rerun `nrun sandbox kube up`.")


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def missing_packages() -> list[str]:
    """The tool packages not installed yet (checked with dpkg, not by guessing from PATH)."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n",
                          *TOOL_PACKAGES], capture_output=True, text=True)
    installed = {line.split()[0] for line in out.stdout.splitlines()
                 if line.endswith(" installed")}
    return [p for p in TOOL_PACKAGES if p not in installed]


def ensure_tools(log: Path) -> None:
    """Install Go, etcd and reflect2's sources with apt-get (only those missing)."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SandboxError(f"{' '.join(missing)} not installed and this is not root. Fix: run "
                           f"`apt-get install --no-install-recommends {' '.join(missing)}` "
                           "as root, or `nrun sandbox kube up` as root once.")
    from nrun_core.sandbox.docker_image import apt_install

    apt_install(missing, log)


def _fetch_source(work: Path, log: Path) -> Path:
    """Download the source package with a private apt config (the system's sources untouched);
    return the orig tarball."""
    apt = work / "apt"
    (apt / "lists" / "partial").mkdir(parents=True)
    (apt / "archives" / "partial").mkdir(parents=True)
    (apt / "sources.list").write_text(deb_src_line() + "\n")
    opts = ["-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={apt / 'lists'}",
            "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", "APT::Sandbox::User=root"]
    _run(["apt-get", *opts, "update"], log, what="apt-get update (private deb-src list)")
    dl = work / "dl"
    dl.mkdir()
    _run(["apt-get", *opts, "source", "--download-only", SOURCE_PACKAGE], log, cwd=dl,
         what=f"apt-get source --download-only {SOURCE_PACKAGE}")
    origs = sorted(dl.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
    if not origs:
        raise SandboxError(f"no {SOURCE_PACKAGE} orig tarball among {sorted(os.listdir(dl))}; "
                           f"see {log}. Fix: point NRUN_KUBE_DEB_SRC at a bookworm deb-src line.")
    return origs[0]


def _unpack(orig: Path, work: Path, log: Path) -> Path:
    """Unpack the orig tarball; return the tree's root (the directory holding the Makefile)."""
    dest = work / "src"
    dest.mkdir()
    _run(["tar", "-xf", str(orig), "-C", str(dest)], log, what=f"unpacking {orig.name}")
    roots = [p.parent for p in dest.glob("*/Makefile")] or [dest]
    return roots[0]


def _swap_reflect2(tree: Path) -> None:
    """Replace the vendored reflect2 1.0.1 (SIGSEGV under Go >= 1.18) with Debian's 1.0.2."""
    vendored = tree / "vendor" / "github.com" / "modern-go" / "reflect2"
    if not REFLECT2_SRC.is_dir():
        raise SandboxError(f"{REFLECT2_SRC} is missing. Fix: apt-get install "
                           "golang-github-modern-go-reflect2-dev")
    shutil.rmtree(vendored)
    shutil.copytree(REFLECT2_SRC, vendored, symlinks=False,
                    ignore=shutil.ignore_patterns("*_test.go", "test*"))


def _make(tree: Path, work: Path, log: Path) -> Path:
    env = {**os.environ, **BUILD_ENV, "GOCACHE": str(work / "gocache"),
           "GOPATH": str(work / "gopath"), "HOME": str(work)}
    _run(["nice", "-n", "10", "make", *MAKE_ARGS], log, env=env, cwd=tree,
         what="make WHAT=cmd/kube-apiserver")
    found = sorted(tree.glob("_output/**/kube-apiserver"))
    found = [p for p in found if p.is_file()]
    if not found:
        raise SandboxError(f"the build produced no kube-apiserver under {tree}/_output; see {log}")
    return found[0]


def ensure_binary() -> Path:
    """The cached kube-apiserver, built first if this machine has none for this recipe."""
    target = binary_path()
    if target.is_file():
        return target
    with _locked():
        if target.is_file():
            return target
        log = build_log()
        ensure_tools(log)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="nrun-kube-build-", dir=kube_cache()))
        try:
            tree = _unpack(_fetch_source(work, log), work, log)
            _swap_reflect2(tree)
            built = _make(tree, work, log)
            tmp = target.with_suffix(".tmp")
            shutil.copy2(built, tmp)
            tmp.replace(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with open(log, "a") as out:
            out.write(f"=== built {target} in {time.monotonic() - started:.0f} s\n")
    return target


if __name__ == "__main__":
    try:
        print(ensure_binary())
    except SandboxError as exc:
        sys.exit(f"error: {exc}")
