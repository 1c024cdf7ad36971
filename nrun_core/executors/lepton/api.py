"""The Lepton workspace API through the leptonai v2 SDK: the only module that imports leptonai,
and only when nrun_lepton is used (importing it costs about a second).

Errors become nrun's: a 401/403 names the token variable and the fix; a 404 is ``Gone`` (the
caller decides: a vanished job is a lost point, never a crash). Transient failures of a request
that changes nothing twice (5xx, connection) are retried with backoff.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional

from nrun_core.errors import BackendError, ConfigError

RETRIES = 3


class Gone(BackendError):
    """The workspace does not know the job (404)."""


class Conflict(BackendError):
    """A job of that name exists already (409): for nrun's unique names, ours."""


def resolve(opts: Any) -> Dict[str, Optional[str]]:
    """Workspace id, URL and token: the settings, else the SDK's environment variables."""
    ws = opts.workspace_id or os.environ.get("LEPTON_WORKSPACE_ID")
    if not ws:
        raise ConfigError("no Lepton workspace: set hydra.launcher.workspace_id (or $LEPTON_WORKSPACE_ID) "
                          "to your workspace id")
    var = str(opts.token_env or "LEPTON_WORKSPACE_TOKEN")
    token = os.environ.get(var)
    if not token:
        raise ConfigError(f"no Lepton workspace token: ${var} is not set in this shell (hydra.launcher.token_env="
                          f"{var}). Fix: export {var}=<token from the workspace's Settings > Tokens>; nrun never "
                          "stores it")
    return {"workspace_id": str(ws), "url": opts.workspace_url or os.environ.get("LEPTON_WORKSPACE_URL"),
            "token": token, "token_env": var}


class Lepton:
    def __init__(self, opts: Any) -> None:
        try:
            from leptonai.api.v2.client import APIClient
        except ImportError:
            raise ConfigError("hydra/launcher=nrun_lepton needs the leptonai SDK (0.47 or later), which is not "
                              "installed here. Fix: pip install 'hydra-nrun[lepton]'") from None

        r = resolve(opts)
        self.token_env = r["token_env"]
        self.client = APIClient(workspace_id=r["workspace_id"], auth_token=r["token"], url=r["url"])
        self.url = self.client.url

    # -- calls -------------------------------------------------------------------------------
    def check_auth(self) -> None:
        """One cheap authenticated call, so a bad token fails before anything is submitted."""
        self._call(lambda: self.client.job.list_all(page=1, page_size=1), "list jobs")

    def create(self, body: Dict[str, Any]) -> str:
        from leptonai.api.v2.types.job import LeptonJob

        job = LeptonJob(**body)
        try:
            created = self._call(lambda: self.client.job.create(job), f"create job {body['metadata']['id']}",
                                 retry=True)
        except Conflict:  # a retried create whose first try went through
            return str(body["metadata"]["id"])
        return str(created.metadata.id_ or body["metadata"]["id"])

    def get(self, job_id: str) -> Any:
        return self._call(lambda: self.client.job.get(job_id), f"read job {job_id}")

    def stop(self, job_id: str) -> None:
        self._call(lambda: self.client.job.update(job_id, {"spec": {"stopped": True}}), f"stop job {job_id}")

    def delete(self, job_id: str) -> None:
        try:
            self._call(lambda: self.client.job.delete(job_id), f"delete job {job_id}", retry=True)
        except Gone:
            pass

    def log_tail(self, job_id: str, size: int = 2000) -> str:
        replicas = self._call(lambda: self.client.job.get_replicas(job_id), f"list replicas of {job_id}")
        if not replicas:
            return ""
        text = "".join(self.client.job.get_log(job_id, replicas[0], timeout=10))
        return text[-size:]

    def create_secret(self, name: str, value: str) -> None:
        from leptonai.api.v2.types.secret import SecretItem

        self._call(lambda: self.client.secret.create([SecretItem(name=name, value=value)]),
                   f"create secret {name}", retry=True)

    def delete_secret(self, name: str) -> None:
        try:
            self._call(lambda: self.client.secret.delete(name), f"delete secret {name}")
        except Gone:
            pass

    def list_jobs(self) -> List[Any]:
        return self._call(lambda: self.client.job.list_all(), "list jobs")

    # -- errors ------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], what: str, retry: bool = False) -> Any:
        from leptonai.api.v2.api_resource import ClientError, ServerError
        import requests

        delay = 1.0
        for attempt in range(RETRIES if retry else 1):
            try:
                return fn()
            except ClientError as exc:
                code = exc.response.status_code
                if code in (401, 403):
                    raise ConfigError(
                        f"the Lepton workspace at {self.url} refused the token ({code}) to {what}: "
                        f"${self.token_env} (hydra.launcher.token_env) is not a valid token of this "
                        f"workspace. Fix: export {self.token_env}=<a current workspace token>") from None
                if code == 404:
                    raise Gone(f"Lepton has no such job or secret ({what}: 404)") from None
                if code == 409:
                    raise Conflict(f"Lepton: {what}: it exists already (409)") from None
                if code != 429 or attempt == RETRIES - 1 or not retry:
                    raise BackendError(f"Lepton refused to {what}: {code} {_short(exc.response.text)}") from None
            except ServerError as exc:
                if attempt == RETRIES - 1 or not retry:
                    raise BackendError(f"Lepton failed to {what}: {exc.response.status_code} "
                                       f"{_short(exc.response.text)}") from None
            except requests.RequestException as exc:
                if attempt == RETRIES - 1 or not retry:
                    raise BackendError(f"could not reach the Lepton workspace at {self.url} to {what}: "
                                       f"{type(exc).__name__}. Fix: check hydra.launcher.workspace_url "
                                       "(or $LEPTON_WORKSPACE_URL) and the network") from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _short(text: str) -> str:
    return " ".join((text or "").split())[:300]
