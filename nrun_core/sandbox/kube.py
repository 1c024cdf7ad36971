"""`nrun sandbox kube up|down|status|env`: a real kube-apiserver (v1.20) and etcd on loopback.

``up`` installs Go and etcd if missing, builds kube-apiserver once per machine (``kube_build``;
7-16 min cold, cached outside the sandbox state), then starts etcd and kube-apiserver on free
127.0.0.1 ports with their data, certificate, token and kubeconfig under
``sandbox_dir("kube")``, and loads the Kubeflow Trainer and KubeRay CRDs adapted for 1.20
(``kube_crds``). Static token auth, a self-signed certificate, RBAC, no ServiceAccount admission
(no controller-manager creates tokens). There is no kubelet: pods never run, objects only exist;
tests play the operators. Clients need only ``KUBECONFIG`` (``env()``). Both daemons are recorded
by pid and start time (``_proc``) and ``down`` stops only those.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from nrun_core.errors import SandboxError
from nrun_core.paths import sandbox_dir
from nrun_core.sandbox import _proc, kube_build, kube_crds

NAME = "kube"
START_TIMEOUT = 60.0     # seconds for etcd, then the apiserver, to become ready
CRD_TIMEOUT = 60.0       # seconds for the CRDs to become Established
SERVICE_RANGE = "10.96.0.0/24"
logger = logging.getLogger(__name__)


class Layout:
    """Paths of the sandbox's state (``$NRUN_SANDBOX_DIR/kube``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etcd_data = root / "etcd-data"
        self.pki = root / "pki"
        self.cert, self.key, self.sa_key = self.pki / "server.crt", self.pki / "server.key", self.pki / "sa.key"
        self.tokens = self.pki / "tokens.csv"
        self.kubeconfig = root / "kubeconfig"
        self.ports = root / "ports.json"
        self.lock = root / "up.lock"
        self.log = root / "log"
        self.pids = root / "pids"

    def record(self, daemon: str) -> Path:
        return self.pids / f"{daemon}.json"

    def logfile(self, daemon: str) -> Path:
        return self.log / f"{daemon}.log"


def layout() -> Layout:
    return Layout(sandbox_dir(NAME))


def env() -> Dict[str, str]:
    """What a client (kubectl, the kubernetes Python client, nrun_kubeflow/nrun_kuberay) needs."""
    return {"KUBECONFIG": str(layout().kubeconfig)}


# ---------------------------------------------------------------------------------- helpers


def _locked(lay: Layout) -> contextlib.AbstractContextManager[None]:
    return _proc.locked(lay.lock)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ports(lay: Layout) -> Dict[str, int]:
    """The ports the sandbox uses: kept across ups (the kubeconfig names them), chosen afresh
    only for a daemon that is not running while something else holds its port."""
    try:
        ports = {k: int(v) for k, v in json.loads(lay.ports.read_text()).items()}
    except (OSError, ValueError):
        ports = {}
    for key, daemon in (("etcd", "etcd"), ("etcd_peer", "etcd"), ("apiserver", "kube-apiserver")):
        if key not in ports or (_proc.running(lay.record(daemon)) is None and _proc.tcp_open(ports[key])):
            ports[key] = _free_port()
            if daemon == "etcd":  # an apiserver still pointed at the old etcd port must restart
                _proc.stop(lay.record("kube-apiserver"), wait=15.0)
    _write(lay.ports, json.dumps(ports), 0o644)
    return ports


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise SandboxError("openssl is not installed; the kube sandbox makes its certificate with "
                           "it. Fix: apt-get install openssl")
    out = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SandboxError(f"`openssl {' '.join(args)}` failed: {out.stderr.strip()[-500:]}")


def _credentials(lay: Layout) -> str:
    """Certificate, service-account key and admin token (made once, 0600); returns the token."""
    lay.pki.mkdir(parents=True, exist_ok=True)
    os.chmod(lay.pki, 0o700)
    if not (lay.cert.is_file() and lay.key.is_file()):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                 "-keyout", str(lay.key), "-out", str(lay.cert), "-subj", "/CN=nrun-kube-sandbox",
                 "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    if not lay.sa_key.is_file():
        _openssl("genrsa", "-out", str(lay.sa_key), "2048")
    if not lay.tokens.is_file():
        _write(lay.tokens, f"{secrets.token_hex(24)},nrun-admin,nrun-admin,system:masters\n", 0o600)
    for path in (lay.key, lay.sa_key, lay.tokens):
        os.chmod(path, 0o600)
    return lay.tokens.read_text().split(",", 1)[0]


def _kubeconfig(lay: Layout, port: int, token: str) -> None:
    import yaml

    ca = base64.b64encode(lay.cert.read_bytes()).decode()
    conf = {
        "apiVersion": "v1", "kind": "Config", "current-context": "nrun-sandbox",
        "clusters": [{"name": "nrun-sandbox", "cluster": {
            "server": f"https://127.0.0.1:{port}", "certificate-authority-data": ca}}],
        "users": [{"name": "nrun-admin", "user": {"token": token}}],
        "contexts": [{"name": "nrun-sandbox", "context": {
            "cluster": "nrun-sandbox", "user": "nrun-admin", "namespace": "default"}}],
    }
    _write(lay.kubeconfig, yaml.safe_dump(conf, sort_keys=False), 0o600)


class _Api:
    """Just enough HTTPS to the apiserver for readiness and CRDs (no client library needed)."""

    def __init__(self, lay: Layout, port: int, token: str) -> None:
        self.base = f"https://127.0.0.1:{port}"
        self.token = token
        self.ctx = ssl.create_default_context(cafile=str(lay.cert))

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw.strip() else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def ready(self) -> bool:
        try:
            status, _ = self.call("GET", "/readyz", timeout=3.0)
        except (OSError, ssl.SSLError):
            return False
        return status == 200


# ---------------------------------------------------------------------------------- daemons


def _start(lay: Layout, daemon: str, argv: list[str], ready: Any, what: str) -> None:
    """Start DAEMON unless it runs; wait until READY() or fail with its log's tail."""
    rec = _proc.running(lay.record(daemon))
    if rec is None:
        with open(lay.logfile(daemon), "a") as fh:
            fh.write(f"\n=== {time.strftime('%F %T')} $ {_proc.show(argv)}\n")
        rec = _proc.spawn(argv, record=lay.record(daemon), log=lay.logfile(daemon),
                          env={**os.environ})
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if not _proc.is_alive(rec):
            raise SandboxError(f"{daemon} exited while starting; see {lay.logfile(daemon)}:\n"
                               f"{_proc.tail(lay.logfile(daemon))}\nFix: correct the cause above "
                               "(`nrun sandbox kube down --purge` starts from clean state), then up.")
        if time.monotonic() > deadline:
            raise SandboxError(f"{daemon} did not become ready ({what}) within {START_TIMEOUT:.0f}s;"
                               f" see {lay.logfile(daemon)}:\n{_proc.tail(lay.logfile(daemon))}\n"
                               "Fix: `nrun sandbox kube down`, then up.")
        time.sleep(0.2)


def _etcd_argv(lay: Layout, ports: Dict[str, int]) -> list[str]:
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd_peer']}"
    return [etcd, "--name", "nrun", "--data-dir", str(lay.etcd_data),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"nrun={peer}", "--log-level", "warn"]


def _apiserver_argv(lay: Layout, binary: Path, ports: Dict[str, int]) -> list[str]:
    return [str(binary),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}", "--insecure-port=0",
            f"--tls-cert-file={lay.cert}", f"--tls-private-key-file={lay.key}",
            f"--cert-dir={lay.pki}",
            f"--token-auth-file={lay.tokens}", "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            f"--service-account-key-file={lay.sa_key}",
            f"--service-account-signing-key-file={lay.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--allow-privileged=true", "--profiling=false", "--enable-priority-and-fairness=false"]


# ---------------------------------------------------------------------------------- CRDs


def _crd_established(crd: Any) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in ((crd or {}).get("status") or {}).get("conditions") or [])


def _load_crds(api: _Api) -> list[str]:
    """Create or update each adapted CRD whose upstream file changed; wait until Established."""
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    names = []
    files = kube_crds.crd_files()
    pending = []
    for path in files:
        digest = kube_crds.file_digest(path)
        name = _crd_name(path)
        names.append(name)
        status, current = api.call("GET", f"{base}/{name}")
        if status == 200 and ((current.get("metadata") or {}).get("annotations") or {}).get(
                kube_crds.SOURCE_ANNOTATION) == digest:
            continue
        pending.append((path, status, current))
    for path, status, current in pending:  # parsed and adapted only when they must be applied
        crd, counts = kube_crds.adapted(path)
        logger.info("loading CRD %s (adapted for 1.20: %s)", crd["metadata"]["name"],
                    ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "unchanged")
        if status == 200:
            crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            code, answer = api.call("PUT", f"{base}/{crd['metadata']['name']}", crd, timeout=120)
        else:
            code, answer = api.call("POST", base, crd, timeout=120)
        if code >= 300:
            raise SandboxError(f"the apiserver refused CRD {crd['metadata']['name']} from {path} "
                               f"({code}): {_message(answer)}\nFix: check that file (NRUN_K8S_CRDS)"
                               " holds the upstream CRD; see nrun_core/sandbox/kube_crds.py for "
                               "what is adapted for 1.20.")
    deadline = time.monotonic() + CRD_TIMEOUT
    for name in names:
        while True:
            code, crd = api.call("GET", f"{base}/{name}")
            if code == 200 and _crd_established(crd):
                break
            if time.monotonic() > deadline:
                raise SandboxError(f"CRD {name} did not become Established within {CRD_TIMEOUT:.0f}s"
                                   f": {json.dumps((crd or {}).get('status'))[:500]}")
            time.sleep(0.2)
    return names


def _crd_name(path: Path) -> str:
    """metadata.name of a CRD file without parsing megabytes of YAML."""
    with open(path) as fh:
        in_meta = False
        for line in fh:
            if line.startswith("metadata:"):
                in_meta = True
            elif in_meta and line.startswith("  name:"):
                return line.split(":", 1)[1].strip()
            elif in_meta and line and not line.startswith(" "):
                break
    return kube_crds.load_yaml(path)["metadata"]["name"]


def _message(answer: Any) -> str:
    if isinstance(answer, dict):
        return str(answer.get("message") or answer)[:1500]
    return str(answer)[:1500]


# ---------------------------------------------------------------------------------- contract


def up() -> Dict[str, str]:
    """Build (once) and start etcd and kube-apiserver, load the CRDs; return the client env."""
    lay = layout()
    if os.geteuid() != 0 and kube_build.missing_packages():
        raise SandboxError(f"{' '.join(kube_build.missing_packages())} not installed; run "
                           "`nrun sandbox kube up` as root once (it installs them with apt-get).")
    kube_build.ensure_tools(kube_build.build_log())
    binary = kube_build.binary_path()
    if not binary.is_file():
        logger.info("building kube-apiserver once for this machine (7-16 min; log %s)",
                    kube_build.build_log())
    binary = kube_build.ensure_binary()
    with _locked(lay):
        for d in (lay.log, lay.pids, lay.etcd_data):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(lay.etcd_data, 0o700)
        token = _credentials(lay)
        ports = _ports(lay)
        _kubeconfig(lay, ports["apiserver"], token)
        _start(lay, "etcd", _etcd_argv(lay, ports), lambda: _proc.tcp_open(ports["etcd"]),
               f"127.0.0.1:{ports['etcd']}")
        api = _Api(lay, ports["apiserver"], token)
        _start(lay, "kube-apiserver", _apiserver_argv(lay, binary, ports), api.ready,
               f"https://127.0.0.1:{ports['apiserver']}/readyz")
        _load_crds(api)
    return env()


def _api() -> Optional[_Api]:
    lay = layout()
    try:
        ports = json.loads(lay.ports.read_text())
        token = lay.tokens.read_text().split(",", 1)[0]
    except (OSError, ValueError):
        return None
    return _Api(lay, int(ports["apiserver"]), token)


def status() -> Tuple[bool, str]:
    """(apiserver ready and every CRD Established?, a report naming what is wrong and the fix)."""
    lay = layout()
    lines = []
    for daemon in ("etcd", "kube-apiserver"):
        rec = _proc.running(lay.record(daemon))
        lines.append(f"{daemon}: " + (f"running, pid {rec.pid}" if rec else "not running")
                     + f"; log {lay.logfile(daemon)}")
    binary = kube_build.binary_path()
    lines.append(f"kube-apiserver binary: {binary if binary.is_file() else 'not built yet'}")
    api = _api()
    ok = api is not None and api.ready()
    if ok:
        assert api is not None
        lines[1] += f"; ready at {api.base}"
        try:
            files = kube_crds.crd_files()
        except SandboxError as exc:
            files, ok = [], False
            lines.append(str(exc))
        for path in files:
            name = _crd_name(path)
            code, crd = api.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            est = code == 200 and _crd_established(crd)
            ok &= est
            lines.append(f"CRD {name}: {'Established' if est else 'MISSING'}")
    lines.append(f"KUBECONFIG={lay.kubeconfig}")
    if not ok:
        lines.append("Fix: nrun sandbox kube up")
    return ok, "\n".join(lines)


def down(purge: bool = False) -> None:
    """Stop the apiserver and etcd this sandbox started; PURGE also deletes their state
    (etcd data, certificate, token, kubeconfig). The built binary stays cached."""
    lay = layout()
    with _locked(lay):
        _proc.stop(lay.record("kube-apiserver"), wait=15.0)
        _proc.stop(lay.record("etcd"), wait=15.0)
        if purge:
            for child in lay.root.iterdir():
                if child.name != lay.lock.name:
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)


if __name__ == "__main__":  # the same as `nrun sandbox kube ...`
    from nrun_core.cli import main

    sys.exit(main(["sandbox", "kube", *sys.argv[1:]]))
