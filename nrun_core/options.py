"""Checks of the options every nrun launcher shares: clear errors before anything is submitted."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Dict, List, Mapping, Sequence, Set, Type

from nrun_core.errors import ConfigError

PROGRESS = ("auto", "table", "lines", "quiet")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names whose values nrun never stores or shows: API keys, tokens, passwords (MY_PASS too),
# credentials, auth headers, private keys. Over-matching only hides a harmless value.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASS|PWD|CREDENTIAL|AUTH|PRIVATE|COOKIE|SESSION)", re.I)
MAX_RETRIES = 100


def check(options: Mapping[str, Any], schema: Type[Any]) -> None:
    valid = {f.name for f in dataclasses.fields(schema)} - {"_target_", "_executor_"}
    unknown = set(options) - valid - {"_target_", "_executor_"}
    if unknown:
        raise ConfigError(f"unknown hydra.launcher key(s) {sorted(unknown)}; valid keys: {sorted(valid)}")
    if options.get("progress", "auto") not in PROGRESS:
        raise ConfigError(f"hydra.launcher.progress={options['progress']!r}: choose one of {PROGRESS}")
    mp = options.get("max_parallel")
    if mp is not None and (not isinstance(mp, int) or mp < 1):
        raise ConfigError(f"hydra.launcher.max_parallel={mp!r}: must be a positive integer, or null")
    t = options.get("timeout_s")
    if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0):
        raise ConfigError(f"hydra.launcher.timeout_s={t!r}: must be a positive number of seconds, or null")
    r = options.get("retries", 0)
    if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= MAX_RETRIES:
        raise ConfigError(f"hydra.launcher.retries={r!r}: must be an integer from 0 to {MAX_RETRIES} "
                          "(each retry waits 1, 2, 4, ... up to 60 s)")
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


def secret_names(options: Mapping[str, Any]) -> Set[str]:
    """Names whose values are never stored or shown: secret_env, and secret-looking env names."""
    return set(secret_looking_env(options)) | {str(n) for n in options.get("secret_env") or []}


def redacted_argv(argv: Sequence[str], secret: Set[str] = frozenset()) -> List[str]:
    """A command line (or overrides) as nrun stores it: the value of every ``KEY=VALUE`` word
    whose last key part looks secret or is a secret name becomes <redacted>."""
    out = []
    for word in argv:
        key, eq, _ = str(word).partition("=")
        last = key.lstrip("+~").rsplit(".", 1)[-1]
        if eq and (last in secret or _SECRET_NAME.search(last)):
            word = f"{key}=<redacted>"
        out.append(word)
    return out


def typed(schema: Type[Any], options: Mapping[str, Any]) -> Any:
    """The options as the schema's dataclass (nested ones too): what executors read."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), dict(options)))
