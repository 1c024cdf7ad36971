"""The Run:ai REST API over one httpx client (connection reuse, one timeout setting).

- Token: ``POST /token`` (client credentials) once, cached until shortly before it expires
  (``expiresIn``, else the JWT's ``exp``, else ``DEFAULT_TTL_S``) and fetched again then, or on a
  401 (once per request); never per status call. The client secret is read from the environment
  at that moment and kept only in memory.
- Retries with exponential backoff (honouring Retry-After) only where a retry is safe: 429, 502,
  503, 504 and connection errors; any other error is reported at once, naming the setting.
- 404 raises ``Gone`` (a vanished workload is a lost point, never a crash).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from nrun_core.errors import BackendError, ConfigError

RETRIES = 4
RETRYABLE = (429, 502, 503, 504)
DEFAULT_TTL_S = 600.0
REFRESH_MARGIN_S = 30.0
PAGE = 100


class Gone(BackendError):
    """Run:ai does not know the workload (404)."""


class RunAI:
    def __init__(self, opts: Any, base_url: Optional[str] = None) -> None:
        try:
            import httpx
        except ImportError:
            raise ConfigError("hydra/launcher=nrun_dgxcloud needs httpx, which is not installed here. Fix: "
                              "pip install 'hydra-nrun[dgxcloud]'") from None

        self.base = str(base_url or opts.base_url or os.environ.get("RUNAI_BASE_URL") or "").rstrip("/")
        if not self.base:
            raise ConfigError("no Run:ai API URL: set hydra.launcher.base_url (or $RUNAI_BASE_URL)")
        self.client_id = opts.client_id or os.environ.get("RUNAI_CLIENT_ID")
        if not self.client_id:
            raise ConfigError("no Run:ai application id: set hydra.launcher.client_id (or $RUNAI_CLIENT_ID)")
        self.secret_env = str(opts.client_secret_env or "RUNAI_CLIENT_SECRET")
        if not os.environ.get(self.secret_env):
            raise ConfigError(f"no Run:ai client secret: ${self.secret_env} is not set in this shell "
                              f"(hydra.launcher.client_secret_env={self.secret_env}). Fix: export "
                              f"{self.secret_env}=<the application's secret>; nrun never stores it")
        # httpx logs each request at INFO, and a Hydra app's root logger shows INFO: one line per
        # status poll on the user's terminal. Its warnings and errors still show.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.http = httpx.Client(timeout=float(getattr(opts, "request_timeout_s", 30.0) or 30.0))
        self._token: Optional[str] = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self._project: Optional[Tuple[str, str]] = None
        self._project_lock = threading.Lock()
        self.token_fetches = 0

    # -- token -------------------------------------------------------------------------------
    def token(self, renew: bool = False) -> str:
        with self._lock:
            if self._token and not renew and time.time() < self._expires - REFRESH_MARGIN_S:
                return self._token
            r = self._send("POST", "/token", {"grantType": "client_credentials", "clientId": self.client_id,
                                              "clientSecret": os.environ.get(self.secret_env, "")}, auth=False)
            if r.status_code in (400, 401, 403):
                raise ConfigError(
                    f"Run:ai at {self.base} refused the application credentials ({r.status_code}): "
                    f"hydra.launcher.client_id={self.client_id} with the secret in ${self.secret_env} "
                    f"(hydra.launcher.client_secret_env). Fix: export {self.secret_env}=<the application's "
                    "current secret> and check client_id")
            self._check(r, "get a token")
            data = r.json()
            tok = data.get("accessToken") or data.get("access_token")
            if not tok:
                raise BackendError(f"Run:ai at {self.base}/token answered without an accessToken")
            self._token, self._expires = tok, time.time() + _ttl(data, tok)
            self.token_fetches += 1
            return tok

    # -- requests ----------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, what: str = "") -> Any:
        """One API call with the cached token; returns the JSON answer ({} for an empty one)."""
        renewed = False
        while True:
            r = self._send(method, path, body, auth=True)
            if r.status_code == 401 and not renewed:  # expired early, or revoked: one fresh token
                self.token(renew=True)
                renewed = True
                continue
            if r.status_code in (401, 403):
                raise ConfigError(f"Run:ai refused to {what or method + ' ' + path} ({r.status_code}) with a fresh "
                                  f"token of hydra.launcher.client_id={self.client_id}: the application lacks "
                                  "access to the project. Fix: grant it a role in hydra.launcher.project")
            if r.status_code == 404:
                raise Gone(f"Run:ai: {what or path}: not found (404)")
            self._check(r, what or f"{method} {path}")
            return r.json() if r.content else {}

    def _send(self, method: str, path: str, body: Any, auth: bool) -> Any:
        import httpx

        delay = 1.0
        for attempt in range(RETRIES):
            headers = {"Authorization": f"Bearer {self.token()}"} if auth else {}
            try:
                r = self.http.request(method, self.base + path, json=body, headers=headers)
            except httpx.TransportError as exc:
                if attempt == RETRIES - 1:
                    raise BackendError(f"could not reach Run:ai at {self.base} ({type(exc).__name__}). Fix: check "
                                       "hydra.launcher.base_url (or $RUNAI_BASE_URL) and the network") from None
                time.sleep(delay)
                delay *= 2
                continue
            if r.status_code not in RETRYABLE or attempt == RETRIES - 1:
                return r
            wait = r.headers.get("Retry-After")
            time.sleep(min(30.0, float(wait)) if wait and wait.isdigit() else delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, r: Any, what: str) -> None:
        if r.status_code >= 400:
            text = " ".join(r.text.split())[:300]
            raise BackendError(f"Run:ai refused to {what}: {r.status_code} {text}")

    # -- resources ---------------------------------------------------------------------------
    def project(self, name: str) -> Tuple[str, str]:
        """(projectId, clusterId) of the project called ``name`` (paged list, looked up once)."""
        with self._project_lock:
            return self._lookup(name)

    def _lookup(self, name: str) -> Tuple[str, str]:
        if self._project is None:
            offset, seen = 0, []
            while True:
                page = self.request("GET", f"/org-unit/projects?offset={offset}&limit={PAGE}", what="list projects")
                items: List[Dict[str, Any]] = page.get("projects") or []
                for p in items:
                    seen.append(str(p.get("name")))
                    if p.get("name") == name:
                        self._project = (str(p["id"]), str(p.get("clusterId") or ""))
                        return self._project
                nxt = page.get("next")
                if not items or (nxt is None and len(items) < PAGE):
                    break
                offset = int(nxt) if nxt is not None else offset + len(items)
            raise ConfigError(f"hydra.launcher.project={name}: no such Run:ai project visible to "
                              f"client_id={self.client_id} (it sees: {', '.join(seen) or 'none'})")
        return self._project

    def create(self, kind: str, body: Dict[str, Any]) -> str:
        ans = self.request("POST", f"/workloads/{kind}", body, what=f"create workload {body['name']}")
        wid = ans.get("workloadId") or ans.get("id")
        if not wid:
            raise BackendError(f"Run:ai created {body['name']} but answered without a workloadId: {ans}")
        return str(wid)

    def get(self, kind: str, wid: str) -> Dict[str, Any]:
        return self.request("GET", f"/workloads/{kind}/{wid}", what=f"read workload {wid}")

    def suspend(self, kind: str, wid: str) -> None:
        self.request("POST", f"/workloads/{kind}/{wid}/suspend", what=f"suspend workload {wid}")

    def delete(self, kind: str, wid: str) -> None:
        try:
            self.request("DELETE", f"/workloads/{kind}/{wid}", what=f"delete workload {wid}")
        except Gone:
            pass

    def close(self) -> None:
        self.http.close()


def _ttl(data: Dict[str, Any], token: str) -> float:
    for key in ("expiresIn", "expires_in"):
        if data.get(key):
            return float(data[key])
    try:  # a JWT: its exp claim
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return float(claims["exp"]) - time.time()
    except Exception:
        return DEFAULT_TTL_S
