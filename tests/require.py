"""Skip or fail for a missing backend: CI names the backends it started in NRUN_REQUIRE.

A test whose backend is missing skips on a developer's machine (with how to start it) and fails
in CI, where a skip would hide a missing install step. Imported by every fixture module, so it
imports nothing of theirs (no circular import through conftest).
"""

from __future__ import annotations

import os
from typing import Any, Dict, NoReturn

import pytest


def required(backend: str) -> bool:
    """True if NRUN_REQUIRE (comma-separated) names BACKEND."""
    return backend in {b.strip() for b in os.environ.get("NRUN_REQUIRE", "").split(",")}


def missing(backend: str, msg: str) -> NoReturn:
    """Fail when BACKEND is required, skip otherwise; MSG says how to bring it up."""
    if required(backend):
        pytest.fail(f"NRUN_REQUIRE={backend} but {msg}", pytrace=False)
    pytest.skip(msg)


def sandbox_env(backend: str, title: str, sandbox: Any) -> Dict[str, str]:
    """The client environment of ``nrun sandbox BACKEND`` (the module SANDBOX) once its status
    says it is usable; ``missing`` with how to bring it up otherwise."""
    ok, report = sandbox.status()
    if not ok:
        missing(backend, f"the {title} sandbox is not up: run `nrun sandbox {backend} up` "
                         f"(or `python -m {sandbox.__name__} up`)\n{report}")
    return sandbox.env()


def pointed_at(env: Dict[str, str], monkeypatch: Any) -> Dict[str, str]:
    """os.environ with ENV set for one test (undone after it); the whole environment."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)
