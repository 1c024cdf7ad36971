"""Fixtures for tests on the SSH sandbox's hosts (`nrun sandbox ssh up`): skip, or fail when
NRUN_REQUIRE names ssh. Hosts are checked through the real `ssh` client, host keys strictly."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from require import pointed_at, sandbox_env


@pytest.fixture(scope="session")
def ssh_sandbox() -> Dict[str, str]:
    from nrun_core.sandbox import ssh

    return sandbox_env("ssh", "SSH", ssh)


@pytest.fixture
def ssh_env(ssh_sandbox: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    """os.environ pointed at the sandbox's hosts for one test: `hydra/launcher=nrun_ssh` alone targets them."""
    pointed_at(ssh_sandbox, monkeypatch)
    return ssh_sandbox


def sandbox_hosts(env: Dict[str, str]) -> List[Dict[str, Any]]:
    return yaml.safe_load(Path(env["NRUN_SSH_HOSTS_FILE"]).read_text())["hosts"]


def on_host(env: Dict[str, str], host: Dict[str, Any], command: str, check: bool = True) -> str:
    """COMMAND on HOST (a hosts-file entry) through the real ssh client; its stdout."""
    argv = ["ssh", "-i", host["key_file"], "-p", str(host["port"]), "-o", f"UserKnownHostsFile={env['NRUN_SSH_KNOWN_HOSTS']}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=30", f"{host['user']}@{host['address']}", command]
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"{command!r} on {host['name']} exited {out.returncode}: {out.stderr}")
    return out.stdout


def sweep_processes(env: Dict[str, str], host: Dict[str, Any], sweep_id: str) -> List[str]:
    """Processes in HOST's own PID namespace that belong to the sweep (tagged NRUN_SWEEP_ID)."""
    script = (f"for e in /proc/[0-9]*/environ; do if tr '\\0' '\\n' < $e 2>/dev/null | "
              f"grep -qx 'NRUN_SWEEP_ID={sweep_id}'; then p=${{e%/environ}}; "
              "echo \"${p#/proc/} $(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\"; fi; done")
    return [line for line in on_host(env, host, script).splitlines() if line.strip()]
