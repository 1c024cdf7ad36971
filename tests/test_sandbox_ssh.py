"""The SSH sandbox's hosts are separate machines as far as a user can tell over SSH.

Needs `nrun sandbox ssh up` (skips otherwise; fails when NRUN_REQUIRE names ssh). Every check
goes through the real `ssh` client with the sandbox's key and known_hosts, strict host key
checking on. Other tests share the sandbox, so no test here stops the login node or a host in
hosts.yaml: stopping is tested on one extra host that the test itself adds and removes.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import nrun, wait_for
from docker_fixtures import docker_sandbox  # noqa: F401  (fixture)
from require import sandbox_env

from nrun_core.errors import SandboxError
from nrun_core.sandbox import _proc, ssh, ssh_hosts


@pytest.fixture(scope="module")
def sandbox() -> dict[str, str]:
    return sandbox_env("ssh", "SSH", ssh)


@pytest.fixture(scope="module")
def hosts(sandbox: dict[str, str]) -> list[dict[str, Any]]:
    found = yaml.safe_load(Path(sandbox["NRUN_SSH_HOSTS_FILE"]).read_text())["hosts"]
    if len(found) < 2:
        pytest.skip(f"needs 2 hosts; {ssh_hosts.COUNT_ENV}={len(found)}")
    return found


def on(env: dict[str, str], address: str, command: str, known_hosts: str | None = None,
       check: bool = True) -> subprocess.CompletedProcess[str]:
    """COMMAND on the host at ADDRESS through the real ssh client, host key checked strictly."""
    argv = ["ssh", "-i", env["NRUN_SSH_KEY"], "-o", f"UserKnownHostsFile={known_hosts or env['NRUN_SSH_KNOWN_HOSTS']}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
            "-o", "GlobalKnownHostsFile=/dev/null", f"{env['NRUN_SSH_USER']}@{address}", command]
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def real_pids(marker: str) -> list[int]:
    """Pids on the real machine whose command line contains MARKER."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_hosts_file_lists_every_host_with_what_the_executor_needs(
        sandbox: dict[str, str], hosts: list[dict[str, Any]]) -> None:
    from nrun_core.sandbox import docker

    assert [h["name"] for h in hosts] == [f"nrun-host{k}" for k in range(1, len(hosts) + 1)]
    assert [h["address"] for h in hosts] == [f"127.0.0.{10 + k}" for k in range(1, len(hosts) + 1)]
    for host in hosts:
        assert host["port"] == 22 and host["user"] == sandbox["NRUN_SSH_USER"]
        assert host["key_file"] == sandbox["NRUN_SSH_KEY"] and host["remote_dir"] == "/tmp/nrun"
        assert host["slots"] >= 1 and host["gpus"] == 0 and os.access(host["python"], os.X_OK)
        assert host["env"] == {"DOCKER_HOST": docker.docker_host()}


def test_every_host_answers_with_its_own_name_resolving_to_its_own_address(
        sandbox: dict[str, str], hosts: list[dict[str, Any]]) -> None:
    for host in hosts:
        py = "import socket; print(socket.gethostbyname(socket.gethostname()))"  # what gloo does
        out = on(sandbox, host["address"], f'hostname; getent hosts "$(hostname)"; {shlex.quote(host["python"])} -c {shlex.quote(py)}')
        name, resolved, by_python = out.stdout.splitlines()
        assert name == host["name"]
        assert resolved.split() == [host["address"], host["name"]]
        assert by_python == host["address"]


def test_a_host_key_not_in_known_hosts_is_refused(
        sandbox: dict[str, str], hosts: list[dict[str, Any]], tmp_path: Path) -> None:
    lines = Path(sandbox["NRUN_SSH_KNOWN_HOSTS"]).read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["[127.0.0.1]:16922", *(h["address"] for h in hosts)]
    without_host1 = tmp_path / "known_hosts"
    without_host1.write_text("\n".join(line for line in lines if not line.startswith("127.0.0.11 ")) + "\n")
    out = on(sandbox, "127.0.0.11", "true", known_hosts=str(without_host1), check=False)
    assert out.returncode != 0 and "Host key verification failed" in out.stderr


def test_tmp_is_private_to_each_host(sandbox: dict[str, str], hosts: list[dict[str, Any]]) -> None:
    name = f"nrun-test-{uuid.uuid4().hex}"
    first, second = hosts[0]["address"], hosts[1]["address"]
    on(sandbox, first, f"echo mine > /tmp/{name}")
    try:
        assert on(sandbox, first, f"cat /tmp/{name}").stdout == "mine\n"
        assert on(sandbox, second, f"test -e /tmp/{name}", check=False).returncode == 1
        assert not Path("/tmp", name).exists()
    finally:
        on(sandbox, first, f"rm -f /tmp/{name}")


def test_processes_are_private_to_each_host(sandbox: dict[str, str], hosts: list[dict[str, Any]]) -> None:
    marker = f"300.{uuid.uuid4().int % 10**9:09d}"  # `sleep 300.NNN`: a command line no one else has
    first, second = hosts[0]["address"], hosts[1]["address"]
    pid = on(sandbox, first, f"setsid nohup sleep {marker} >/dev/null 2>&1 </dev/null & echo $!").stdout.strip()
    try:
        ps_first = on(sandbox, first, "ps -e -o pid=,args=").stdout
        assert f"{pid} sleep {marker}" in " ".join(ps_first.split())
        assert marker not in on(sandbox, second, "ps -e -o pid=,args=").stdout
    finally:
        on(sandbox, first, f"kill {pid}", check=False)


def test_up_again_starts_nothing_new_and_status_reports_every_host(
        sandbox: dict[str, str], hosts: list[dict[str, Any]]) -> None:
    login = _proc.running(ssh.root() / "sshd.json")
    before = {h.name: ssh_hosts.running(h) for h in ssh_hosts.configured()}
    assert ssh.up() == sandbox
    assert _proc.running(ssh.root() / "sshd.json") == login
    assert {h.name: ssh_hosts.running(h) for h in ssh_hosts.configured()} == before
    out = nrun("sandbox", "ssh", "status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"sshd  up  pid {login.pid}  127.0.0.1:16922" in out.stdout
    for host in hosts:
        assert f"{host['name']}  up  pid {before[host['name']].pid}  {host['address']}:22" in out.stdout


def test_an_added_host_starts_alone_and_stopping_it_ends_its_processes(
        sandbox: dict[str, str], hosts: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    n = ssh_hosts.count()
    extra = ssh_hosts.Host(n + 1)
    before = {h.name: ssh_hosts.running(h) for h in ssh_hosts.configured()}
    monkeypatch.setenv(ssh_hosts.COUNT_ENV, str(n + 1))
    try:
        ssh.up()
        assert {h.name: ssh_hosts.running(h) for h in ssh_hosts.configured()[:n]} == before
        assert on(sandbox, extra.address, "hostname").stdout.strip() == extra.name
        # the hosts already running see the new one in their /etc/hosts
        assert on(sandbox, hosts[0]["address"], f"getent hosts {extra.name}").stdout.split() == \
            [extra.address, extra.name]
        marker = f"300.{uuid.uuid4().int % 10**9:09d}"
        on(sandbox, extra.address, f"setsid nohup sleep {marker} >/dev/null 2>&1 </dev/null &")
        assert wait_for(lambda: real_pids(f"sleep {marker}"), timeout=30)
        monkeypatch.setenv(ssh_hosts.COUNT_ENV, str(n))
        ssh.up()  # stops the host beyond N by its recorded pid
        assert ssh_hosts.running(extra) is None and not _proc.tcp_open(22, extra.address)
        wait_for(lambda: not real_pids(f"sleep {marker}"), timeout=30)
        assert extra.name not in Path(sandbox["NRUN_SSH_HOSTS_FILE"]).read_text()
        assert extra.address not in Path(sandbox["NRUN_SSH_KNOWN_HOSTS"]).read_text()
        assert {h.name: ssh_hosts.running(h) for h in ssh_hosts.configured()} == before
    finally:
        monkeypatch.setenv(ssh_hosts.COUNT_ENV, str(n))
        ssh.up()


def test_a_bad_host_count_or_a_taken_port_is_refused_before_anything_starts(
        sandbox: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    n = ssh_hosts.count()
    monkeypatch.setenv(ssh_hosts.COUNT_ENV, "two")
    with pytest.raises(SandboxError, match=ssh_hosts.COUNT_ENV):
        ssh.up()
    monkeypatch.setenv(ssh_hosts.COUNT_ENV, str(n + 1))
    taken = ssh_hosts.Host(n + 1)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((taken.address, 22))
        squatter.listen()
        with pytest.raises(SandboxError, match=f"{taken.address}:22 .*{taken.name}.*did not start"):
            ssh.up()
    assert ssh_hosts.running(taken) is None
    monkeypatch.setenv(ssh_hosts.COUNT_ENV, str(n))
    assert ssh.status()[0]


@pytest.mark.docker
def test_a_host_reaches_the_docker_sandbox_engine(
        sandbox: dict[str, str], hosts: list[dict[str, Any]], docker_sandbox: dict[str, str]) -> None:  # noqa: F811
    from nrun_core.sandbox import docker

    version = docker.engine_version()
    host = hosts[0]
    out = on(sandbox, host["address"],
             f"DOCKER_HOST={shlex.quote(host['env']['DOCKER_HOST'])} docker version --format '{{{{.Server.Version}}}}'")
    assert out.stdout.strip() == version["Version"]

