"""Offline Python images for the Docker sandbox: built once, cached as tarballs, tagged by recipe.

No registry is reachable here, so the base image is a debootstrap'ed Debian rootfs plus wheels
installed by the host's pip, imported with ``docker import``. The tarball is cached under
``cache_dir()/docker`` so a fresh engine (or ``docker system prune``) costs seconds, not minutes.
Tags are a hash of the recipe: change the recipe and a new image is built beside the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nrun_core.errors import SandboxError
from nrun_core.paths import cache_dir
from nrun_core.sandbox import _proc

BASE_REPO = "nrun-python"
TORCH_REPO = "nrun-python-torch"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
_PIP = [sys.executable, "-m", "pip"]  # the host's pip, with its config (index, find-links)
SITE = "/usr/local/lib/python3.11/dist-packages"  # on bookworm's sys.path, empty in minbase

# Change anything here (bump "revision" for changes the fields cannot express) to get a new tag.
BASE_RECIPE: dict[str, Any] = {
    "revision": 2,
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["python3", "ca-certificates"],
    "python": "3.11",
    "platforms": ["manylinux2014_x86_64"],
    # antlr4 4.9.3 (needed by hydra 1.3) is an sdist only: the host builds it (pure Python).
    "sdists": ["antlr4-python3-runtime==4.9.3"],
    "pip": ["hydra-core==1.3.2", "omegaconf==2.3.1", "PyYAML==6.0.3"],
    "env": ["LANG=C.UTF-8", "PYTHONUNBUFFERED=1"],
    # Not needed to run Python; about a third of the rootfs.
    "prune": ["usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
              "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"],
}

TORCH_RECIPE: dict[str, Any] = {
    "revision": 2,
    "python": "3.11",
    "platforms": ["manylinux_2_28_x86_64", "manylinux2014_x86_64"],
    # torch from /opt/wheels (pip's find-links), its deps from PyPI; numpy or torch warns at import.
    "pip": ["torch==2.13.0+cpu", "numpy==2.4.6"],
}


def recipe_hash(recipe: Mapping[str, Any]) -> str:
    """First 12 hex digits of the recipe's canonical JSON: the tag of the image it makes."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def base_tag(recipe: Mapping[str, Any] = BASE_RECIPE) -> str:
    """``nrun-python:<hash12>``; stable for as long as the recipe is."""
    return f"{BASE_REPO}:{recipe_hash(recipe)}"


def torch_tag(recipe: Mapping[str, Any] = TORCH_RECIPE, base: str | None = None) -> str:
    """``nrun-python-torch:<hash12>``; the hash covers the base tag too."""
    return f"{TORCH_REPO}:{recipe_hash({**recipe, 'base': base or base_tag()})}"


def image_cache() -> Path:
    """Where rootfs and build-context tarballs and build logs are kept across runs."""
    path = cache_dir() / "docker"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _locked(path: Path) -> contextlib.AbstractContextManager[None]:
    """Serialise builds across processes (tests, CI and a user may call up() at once)."""
    return _proc.locked(path)


def _keep_recent(cache: Path, repo: str, suffix: str, keep: int = 2) -> None:
    """Drop all but the KEEP newest cached tarballs of REPO: old recipes are ~0.1-1 GB each."""
    found = sorted(cache.glob(f"{repo}-" + "?" * 12 + suffix), key=lambda p: p.stat().st_mtime)
    for old in found[:-keep]:
        old.unlink(missing_ok=True)
        old.with_name(old.name[: -len(suffix)] + ".log").unlink(missing_ok=True)


def _run(cmd: list[str], log: Path, what: str, fix: str, cwd: Path | None = None) -> None:
    """Run a build step with output appended to LOG; a failure names the step, log and fix."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=cwd)
    if rc != 0:
        raise SandboxError(f"{what} failed (exit {rc}); see {log}. {fix}")


def apt_install(packages: list[str], log: Path) -> None:
    """Install Debian packages, refreshing the index once if one is unknown."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=900", "install", "-y",
           "--no-install-recommends", *packages]
    with open(log, "ab") as out:
        for attempt in range(2):
            out.write(f"\n$ {' '.join(cmd)}\n".encode())
            out.flush()
            if subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                               stdin=subprocess.DEVNULL) == 0:
                return
            if attempt == 0:
                subprocess.call(["apt-get", "-o", "DPkg::Lock::Timeout=900", "update"],
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)
    raise SandboxError(
        f"installing {' '.join(packages)} with apt-get failed; see {log}. "
        f"Fix: run `apt-get install --no-install-recommends {' '.join(packages)}` as root."
    )


def _pip_target(target: Path, recipe: Mapping[str, Any], log: Path,
                find_links: Path | None = None) -> None:
    """Install the recipe's wheels into TARGET for the image's Python, not the host's."""
    cmd = [*_PIP, "install", "--no-compile", "--target", str(target),
           "--python-version", recipe["python"], "--implementation", "cp",
           "--abi", "cp" + recipe["python"].replace(".", ""), "--only-binary=:all:"]
    for platform in recipe["platforms"]:
        cmd += ["--platform", platform]
    if find_links is not None:
        cmd += ["--find-links", str(find_links)]
    cmd += list(recipe["pip"])
    _run(cmd, log, "pip install " + " ".join(recipe["pip"]),
         "Fix: check that PyPI answers (pip config list) and the versions in the recipe exist.")


def _relocate_scripts(site: Path, dest: Path) -> None:
    """Move pip's console scripts (torchrun, ...) from SITE/bin to DEST, for the image's python3.

    pip --target writes them beside the packages with the HOST interpreter in the shebang.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for script in sorted((site / "bin").glob("*")):
        text = script.read_bytes()
        if text.startswith(b"#!") and b"python" in text.split(b"\n", 1)[0]:
            text = b"#!/usr/bin/python3" + text[text.index(b"\n"):]
        (dest / script.name).write_bytes(text)
        (dest / script.name).chmod(0o755)
        script.unlink()
    with contextlib.suppress(OSError):
        (site / "bin").rmdir()


def _docker_client(docker_host: str) -> Any:
    """docker-py, imported only here; the API version is negotiated with the engine."""
    try:
        import docker
    except ImportError:
        raise SandboxError(
            "the Docker sandbox needs docker-py; fix: pip install 'hydra-nrun[docker]'"
        ) from None
    return docker.DockerClient(base_url=docker_host, version="auto", timeout=600)


def _stream_build_log(lines: Iterator[dict[str, Any]], log: Path) -> str | None:
    """Write docker build's JSON stream to LOG; return the engine's error text, if any."""
    error = None
    with open(log, "a") as out:
        for chunk in lines:
            if "stream" in chunk:
                out.write(chunk["stream"])
            if "error" in chunk:
                error = chunk["error"]
                out.write(f"ERROR: {error}\n")
    return error


def has_image(client: Any, tag: str) -> bool:
    """True when the engine holds TAG."""
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


# --------------------------------------------------------------------------- base image


def build_base_rootfs(recipe: Mapping[str, Any] = BASE_RECIPE) -> Path:
    """The cached rootfs tarball for RECIPE, built with debootstrap + host pip if absent."""
    cache = image_cache()
    h = recipe_hash(recipe)
    tarball = cache / f"{BASE_REPO}-{h}.tar"
    with _locked(cache / "build.lock"):
        if tarball.exists():
            return tarball
        if os.geteuid() != 0:
            raise SandboxError(f"building the base image {BASE_REPO}:{h} needs root (debootstrap,"
                               " chroot). Fix: run `nrun sandbox docker up` as root once.")
        log = cache / f"{BASE_REPO}-{h}.log"
        log.write_text(f"building {BASE_REPO}:{h} from {json.dumps(recipe)}\n")
        if shutil.which("debootstrap") is None:
            apt_install(["debootstrap"], log)
        work = cache / f"build-{h}"
        shutil.rmtree(work, ignore_errors=True)
        rootfs = work / "rootfs"
        rootfs.mkdir(parents=True)
        started = time.monotonic()
        _run(["debootstrap", f"--variant={recipe['variant']}",
              f"--include={','.join(recipe['include'])}", recipe["suite"], str(rootfs),
              DEBIAN_MIRROR], log, "debootstrap",
             f"Fix: check that {DEBIAN_MIRROR} answers (apt-get update) and there is disk space "
             f"under {cache}.")
        wheels = work / "wheels"
        _run([*_PIP, "wheel", "--no-deps", "-w", str(wheels),
              *recipe["sdists"]], log, "building wheels of " + " ".join(recipe["sdists"]),
             "Fix: check that PyPI answers and the host's pip can build pure-Python sdists.")
        _pip_target(rootfs / SITE.lstrip("/"), recipe, log, find_links=wheels)
        _relocate_scripts(rootfs / SITE.lstrip("/"), rootfs / "usr" / "local" / "bin")
        # Byte-compile with the image's own interpreter, so containers never recompile.
        _run(["chroot", str(rootfs), "python3", "-m", "compileall", "-q",
              "--invalidation-mode", "unchecked-hash", SITE], log, "compileall in the rootfs",
             "Fix: see the log; the rootfs may be incomplete (delete the build dir and retry).")
        for pattern in recipe["prune"]:
            for entry in rootfs.glob(pattern):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        (rootfs / "etc" / "nrun-image.json").write_text(json.dumps(recipe, indent=1) + "\n")
        partial = tarball.with_suffix(".partial")
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], log,
             "packing the rootfs", f"Fix: check disk space under {cache}.")
        partial.rename(tarball)
        shutil.rmtree(work, ignore_errors=True)
        _keep_recent(cache, BASE_REPO, ".tar")
        with open(log, "a") as out:
            out.write(f"built {tarball} in {time.monotonic() - started:.0f}s\n")
        return tarball


def ensure_base_image(docker_host: str, recipe: Mapping[str, Any] = BASE_RECIPE) -> str:
    """Import the base image into the engine unless it is there; return its tag."""
    tag = base_tag(recipe)
    client = _docker_client(docker_host)
    try:
        if has_image(client, tag):
            return tag
        tarball = build_base_rootfs(recipe)
        with _locked(image_cache() / "import.lock"):
            if has_image(client, tag):
                return tag
            changes = [f"ENV {kv}" for kv in recipe["env"]]
            changes += ['CMD ["python3"]', f"LABEL nrun.recipe={recipe_hash(recipe)}"]
            repo, version = tag.split(":")
            try:
                client.api.import_image_from_file(str(tarball), repository=repo, tag=version,
                                                  changes=changes)
            except Exception as exc:  # docker.errors.APIError keeps the engine's words
                raise SandboxError(
                    f"docker import of {tarball} as {tag} failed: {exc}. Fix: delete {tarball} "
                    "to rebuild it, or check the engine log (nrun sandbox docker status)."
                ) from exc
            if not has_image(client, tag):
                raise SandboxError(f"docker import of {tarball} did not produce {tag}; "
                                   f"fix: delete {tarball} and run `nrun sandbox docker up`.")
        return tag
    finally:
        client.close()


# --------------------------------------------------------------------------- torch image


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _compile_in_image(docker_host: str, image: str, site: Path, log: Path) -> None:
    """Byte-compile SITE with IMAGE's Python, so containers never recompile at import.

    Best effort: a few files are not meant for 3.11 (torch ships a py312-only test helper), so
    compile errors are logged, not raised; only a container that cannot run is an error.
    """
    client = _docker_client(docker_host)
    try:
        container = client.containers.run(
            image, ["python3", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
                    "/site"],
            volumes={str(site): {"bind": "/site", "mode": "rw"}}, labels={"nrun.sandbox": "1"},
            detach=True)
        try:
            code = container.wait()["StatusCode"]
            with open(log, "ab") as out:
                out.write(container.logs() + f"compileall exit {code}\n".encode())
        finally:
            container.remove(force=True)
    except Exception as exc:  # docker.errors.* keep the engine's words
        raise SandboxError(f"running {image} to byte-compile {site} failed: {exc}; see {log}. "
                           "Fix: check the base image runs (nrun sandbox docker status).") from exc
    finally:
        client.close()


def build_torch_context(docker_host: str, base: str,
                        recipe: Mapping[str, Any] = TORCH_RECIPE) -> Path:
    """The cached ``docker build`` context (Dockerfile + byte-compiled site/) for the torch image.

    Wheels come from the host's pip; compiling runs in the base image so the .pyc files match
    its Python. Kept as one tarball: rebuilding the image later needs no pip and no network.
    """
    cache = image_cache()
    tag = torch_tag(recipe, base)
    h = tag.split(":")[1]
    context = cache / f"{TORCH_REPO}-{h}.context.tar"
    with _locked(cache / "build.lock"):
        if context.exists():
            return context
        log = cache / f"{TORCH_REPO}-{h}.log"
        log.write_text(f"building {tag} from {json.dumps(recipe)} on {base}\n")
        work = cache / f"build-{h}"
        shutil.rmtree(work, ignore_errors=True)
        site = work / "site"
        site.mkdir(parents=True)
        _pip_target(site, recipe, log)
        _relocate_scripts(site, work / "bin")
        _compile_in_image(docker_host, base, site, log)
        dockerfile = (f"FROM {base}\nCOPY site/ {SITE}/\nCOPY bin/ /usr/local/bin/\n"
                      f"LABEL nrun.recipe={h}\n").encode()
        partial = context.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            _add_bytes(tar, "Dockerfile", dockerfile)
            tar.add(site, arcname="site")
            tar.add(work / "bin", arcname="bin")
        partial.rename(context)
        shutil.rmtree(work, ignore_errors=True)
        _keep_recent(cache, TORCH_REPO, ".context.tar")
        return context


def ensure_torch_image(docker_host: str, recipe: Mapping[str, Any] = TORCH_RECIPE) -> str:
    """Build the torch CPU image FROM the local base image unless present; return its tag."""
    base = ensure_base_image(docker_host)
    tag = torch_tag(recipe, base)
    client = _docker_client(docker_host)
    try:
        if has_image(client, tag):
            return tag
        context = build_torch_context(docker_host, base, recipe)
        log = image_cache() / f"{TORCH_REPO}-{tag.split(':')[1]}.log"
        with _locked(image_cache() / "import.lock"):
            if has_image(client, tag):
                return tag
            with open(context, "rb") as fileobj:
                error = _stream_build_log(
                    client.api.build(fileobj=fileobj, custom_context=True, tag=tag, rm=True,
                                     forcerm=True, pull=False, decode=True), log)
            if error or not has_image(client, tag):
                raise SandboxError(
                    f"docker build of {tag} failed: {error or 'no image made'}; see {log}. "
                    f"Fix: delete {context} to rebuild the context, then run "
                    "`NRUN_SANDBOX_TORCH=1 nrun sandbox docker up`."
                )
        return tag
    finally:
        client.close()
