"""Checks of the options every nrun launcher shares: clear errors before anything is submitted."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, Mapping, Type

from nrun_core.errors import ConfigError

PROGRESS = ("auto", "table", "lines", "quiet")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)


def check(options: Mapping[str, Any], schema: Type[Any]) -> None:
    valid = {f.name for f in dataclasses.fields(schema)} - {"_target_"}
    unknown = set(options) - valid - {"_target_"}
    if unknown:
        raise ConfigError(f"unknown hydra.launcher key(s) {sorted(unknown)}; valid keys: {sorted(valid)}")
    if options.get("progress", "auto") not in PROGRESS:
        raise ConfigError(f"hydra.launcher.progress={options['progress']!r}: choose one of {PROGRESS}")
    mp = options.get("max_parallel")
    if mp is not None and (not isinstance(mp, int) or mp < 1):
        raise ConfigError(f"hydra.launcher.max_parallel={mp!r}: must be a positive integer, or null")
    t = options.get("timeout_s")
    if t is not None and (not isinstance(t, (int, float)) or t <= 0):
        raise ConfigError(f"hydra.launcher.timeout_s={t!r}: must be a positive number of seconds, or null")
    r = options.get("retries", 0)
    if not isinstance(r, int) or r < 0:
        raise ConfigError(f"hydra.launcher.retries={r!r}: must be an integer >= 0")
    for key in ("nodes", "gpus_per_node"):
        v = options.get(key, 0)
        if not isinstance(v, int) or v < (1 if key == "nodes" else 0):
            raise ConfigError(f"hydra.launcher.{key}={v!r}: must be an integer >= {1 if key == 'nodes' else 0}")
    for name in (options.get("env") or {}):
        if not _ENV_NAME.match(str(name)):
            raise ConfigError(f"hydra.launcher.env.{name}: not a valid environment variable name")
    for name in options.get("secret_env") or []:
        if not _ENV_NAME.match(str(name)):
            raise ConfigError(f"hydra.launcher.secret_env: {name!r} is not a valid environment variable name")
        if name not in os.environ:
            raise ConfigError(f"hydra.launcher.secret_env names {name} but it is not set in this shell; "
                              f"export {name}=... before launching (its value is passed on, never stored)")


def secret_looking_env(options: Mapping[str, Any]) -> list[str]:
    """Names in ``env`` that look like secrets: their values are redacted in the store and output."""
    return sorted(k for k in (options.get("env") or {}) if _SECRET_NAME.search(str(k)))


def redacted(options: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(options)
    secret = set(secret_looking_env(options))
    if secret:
        out["env"] = {k: ("<redacted>" if k in secret else v) for k, v in options["env"].items()}
    return out
