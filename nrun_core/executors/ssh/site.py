"""One SSH host as nrun_ssh uses it: a strict-key connection, nrun's two helper files and the
sweep's code shipped once (content-addressed, reused across sweeps), points started and signalled
through ``nrun_host.py``, their ends watched over one long-lived channel, files copied back.

Remote layout under the host's ``remote_dir``:
    lib/<digest>/nrun_point.py, nrun_host.py, nrun_unpack.py   the runtime (stdlib + hydra only)
    artifacts/<digest>.tar.gz, code/<digest>/                 the sweep's code, unpacked safely
A point's job dir is the launcher's own path on every host (Hydra's job dir, cwd and `.hydra/`
files are what the basic launcher gives); when a host shares that filesystem with the launcher
(a probe tells), nothing is copied either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import queue
import stat
import threading
from typing import Any, Dict, List, Optional, Sequence

from nrun_core.errors import BackendError
from nrun_core.executors.ssh.hosts import Host

LIB_FILES = {"nrun_point.py": "nrun_core.runtime.point", "nrun_host.py": "nrun_core.runtime.host",
             "nrun_unpack.py": "nrun_core.packaging.unpack"}
FETCH_MAX_FILES = 10_000


def _lib_sources() -> Dict[str, str]:
    import importlib

    return {name: importlib.import_module(mod).__file__ for name, mod in LIB_FILES.items()}  # type: ignore[misc]


def lib_digest() -> str:
    h = hashlib.sha256()
    for name, path in sorted(_lib_sources().items()):
        h.update(name.encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


class HostSite:
    def __init__(self, host: Host, *, known_hosts: str, python: str, remote_dir: str,
                 connect_timeout_s: float) -> None:
        from nrun_core.transport.ssh import SshTransport

        self.host = host
        self.transport = SshTransport(host.address, port=host.port, user=host.user, key_file=host.key_file,
                                      known_hosts=known_hosts, connect_timeout_s=connect_timeout_s,
                                      env=host.env, setting=f"host {host.name}")
        self.python = host.python or python
        self.remote_dir = host.remote_dir or remote_dir
        self._root: Optional[str] = None
        self._lib: Optional[str] = None
        self._code: Dict[str, str] = {}
        self._lock = threading.RLock()
        self._chan: Any = None                       # the nrun_host.py server's channel
        self._chan_pid: Optional[int] = None
        self._pending: Dict[int, "_Waiter"] = {}
        self._next_id = 0
        self.events: "Optional[queue.Queue[Any]]" = None  # where point ends go (the executor's)
        self.cores: Optional[int] = None  # the host's CPUs, learnt by check_python

    @property
    def name(self) -> str:
        return self.host.name

    def close(self) -> None:
        self._chan = None
        self.transport.close()

    # -- the host's files ------------------------------------------------------------------
    def root(self) -> str:
        if self._root is None:
            self.transport.makedirs(self.remote_dir)
            self._root = self.transport.realpath(self.remote_dir)
        return self._root

    def lib(self) -> str:
        """nrun's helper files on the host, uploaded once per nrun version."""
        with self._lock:
            if self._lib is None:
                dest = posixpath.join(self.root(), "lib", lib_digest())
                for name, src in _lib_sources().items():
                    target = posixpath.join(dest, name)
                    have = self.transport.stat(target)
                    if have is None or have.st_size != os.path.getsize(src):
                        self.transport.put(src, target)
                self._lib = dest
            return self._lib

    def code(self, digest: str) -> str:
        """The artifact unpacked on the host (by nrun's own safe unpacker), shipped only if absent."""
        with self._lock:
            if digest in self._code:
                return self._code[digest]
            from nrun_core.packaging import store

            root, lib = self.root(), self.lib()
            dest = posixpath.join(root, "code", digest)
            archive = store.archive_path(digest)
            remote_archive = posixpath.join(root, "artifacts", archive.name)
            if self.transport.stat(posixpath.join(dest, ".nrun-unpacked")) is None:
                have = self.transport.stat(remote_archive)
                if have is None or have.st_size != archive.stat().st_size:
                    self.transport.put(str(archive), remote_archive)
                limits = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("NRUN_UNPACK_MAX_")]
                out = self.transport.run(["env", *limits, self.python, posixpath.join(lib, "nrun_unpack.py"),
                                          remote_archive, dest], timeout=600)
                if out.returncode != 0:
                    raise BackendError(f"unpacking the code on host {self.host.where} failed: "
                                       f"{(out.stderr or out.stdout).strip()[-2000:]}")
            self._code[digest] = dest
            return dest

    def check_python(self) -> None:
        """The host's Python must run the point runtime: hydra-core and omegaconf importable."""
        out = self.transport.run([self.python, "-c", "import hydra, omegaconf, os; print(len(os.sched_getaffinity(0)))"],
                                 timeout=60)
        if out.returncode != 0:
            raise BackendError(f"host {self.host.where}: `{self.python}` cannot import hydra and omegaconf "
                               f"({(out.stderr or out.stdout).strip()[-300:]}). Fix: set hydra.launcher.python "
                               "(or the host's `python` in the hosts file) to a Python with hydra-core and "
                               "the task's packages, or add activation lines to hydra.launcher.setup")
        try:
            self.cores = int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.cores = None

    # -- points ----------------------------------------------------------------------------
    def helper(self, command: str, job: Dict[str, Any], timeout: float = 60.0) -> Dict[str, Any]:
        out = self.transport.run([self.python, posixpath.join(self.lib(), "nrun_host.py"), command],
                                 input=json.dumps(job), timeout=timeout)
        try:
            return json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BackendError(f"nrun_host.py {command} on host {self.host.where} did not answer "
                               f"(exit {out.returncode}): {(out.stderr or out.stdout).strip()[-1000:]}") from None

    def call(self, op: str, timeout: float = 60.0, **fields: Any) -> Dict[str, Any]:
        """One request to this host's nrun_host.py server (started on first use, one per process
        and host), its reply back; BackendError names the host when the channel fails."""
        waiter = _Waiter()
        with self._lock:
            chan = self._server_channel()
            self._next_id += 1
            rid = self._next_id
            self._pending[rid] = waiter
            try:
                chan.sendall((json.dumps({"id": rid, "op": op, **fields}) + "\n").encode())
            except Exception as exc:
                self._pending.pop(rid, None)
                raise BackendError(f"host {self.host.where}: the connection failed ({exc})") from None
        if not waiter.done.wait(timeout):
            with self._lock:
                self._pending.pop(rid, None)
            raise BackendError(f"host {self.host.where}: no answer to `{op}` within {timeout:.0f} s")
        if waiter.failed:
            raise BackendError(f"host {self.host.where}: {waiter.failed}")
        return waiter.reply

    def _server_channel(self) -> Any:
        """The long-lived `nrun_host.py serve` channel (caller holds the lock)."""
        chan = self._chan
        if chan is None or chan.closed or self._chan_pid != os.getpid():
            client = self.transport.connect()
            t = client.get_transport()
            t.set_keepalive(5)
            chan = t.open_session()
            words = [self.python, posixpath.join(self.lib(), "nrun_host.py"), "serve"]
            line = " ".join(_q(w) for w in words)
            if self.host.env:
                from nrun_core.shell import exports

                line = exports(self.host.env).replace("\n", "; ") + "; exec " + line
            chan.exec_command(line)
            self._chan, self._chan_pid, self._pending = chan, os.getpid(), {}
            threading.Thread(target=self._read_server, args=(chan,), daemon=True,
                             name=f"nrun-ssh-{self.name}").start()
        return chan

    def _read_server(self, chan: Any) -> None:
        buf = b""
        while True:
            try:
                data = chan.recv(1 << 20)
            except Exception:
                data = b""
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "event" in msg:
                    if self.events is not None:
                        self.events.put(("host_end", self.name, msg["event"]))
                    continue
                with self._lock:
                    waiter = self._pending.pop(msg.get("id"), None)
                if waiter is not None:  # a request's own failure is in its reply ("error")
                    waiter.reply = msg.get("reply") or {}
                    waiter.done.set()
        with self._lock:
            if self._chan is chan:
                self._chan = None
            pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.failed = "the connection closed"
            waiter.done.set()
        if self.events is not None:
            self.events.put(("watch_closed", self.name))

    # -- files back ------------------------------------------------------------------------
    def append_new(self, remote: str, local: str, offsets: Dict[str, int]) -> None:
        """New bytes of a remote log onto the local copy (live `nrun logs -f`)."""
        offset = offsets.get(local, 0)
        data = self.transport.read(remote, offset, 1 << 40)
        if data:
            with open(local, "ab") as out:
                out.write(data)
            offsets[local] = offset + len(data)

    def fetch_tree(self, remote_dir: str, local_dir: str, *, skip: Sequence[str] = ()) -> List[str]:
        """Regular files of the job dir (recursively, no links) into the local job dir: what the
        task wrote, `.hydra/`, Hydra's job log. Skips paths under ``skip`` (relative)."""
        got: List[str] = []
        todo = [""]
        while todo and len(got) < FETCH_MAX_FILES:
            rel = todo.pop()
            try:
                entries = self.transport.listdir_attr(posixpath.join(remote_dir, rel))
            except OSError:
                continue
            for e in entries:
                sub = posixpath.join(rel, e.filename) if rel else e.filename
                if any(sub == s or sub.startswith(s + "/") for s in skip):
                    continue
                mode = e.st_mode or 0
                if stat.S_ISDIR(mode):
                    todo.append(sub)
                elif stat.S_ISREG(mode):
                    local = os.path.join(local_dir, *sub.split("/"))
                    os.makedirs(os.path.dirname(local), exist_ok=True)
                    self.transport.get(posixpath.join(remote_dir, sub), local)
                    got.append(sub)
        return got

    def remove_tree(self, path: str) -> None:
        self.call("remove", timeout=120, path=path)


class _Waiter:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Dict[str, Any] = {}
        self.failed = ""


def _q(word: str) -> str:
    import shlex

    return shlex.quote(str(word))
