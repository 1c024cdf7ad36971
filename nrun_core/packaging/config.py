"""Packager settings: defaults, and validation that fails before anything runs.

Each packager is a plain mapping (as Hydra composes it from ``conf/nrun/packager/<name>.yaml``).
``normalize`` returns a fresh dict with every key present and typed, or raises ConfigError naming
the setting (``hydra.launcher.packager.<key>``), the bad value, and what would be accepted.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from nrun_core.errors import ConfigError

PREFIX = "hydra.launcher.packager"
ON_DIRTY = ("error", "warn", "include")
HYDRA_OUTPUTS = ["/outputs/", "/multirun/"]  # Hydra's default output roots: never code, often secrets

DEFAULTS: dict[str, dict[str, Any]] = {
    "passthrough": {"name": "passthrough"},
    "git": {"name": "git", "ref": "HEAD", "subpath": "", "submodules": True, "on_dirty": "error", "exclude": HYDRA_OUTPUTS},
    "pattern": {"name": "pattern", "base_dir": ".", "include": ["**"], "exclude": HYDRA_OUTPUTS},
    "hybrid": {"name": "hybrid", "parts": {}, "merge": False, "workdir_from": None},
    "workdir": {"name": "workdir", "base_dir": ".", "exclude": HYDRA_OUTPUTS},
}
NAMES = tuple(DEFAULTS)


def plain(value: Any) -> Any:
    """Deep copy of mappings/sequences into dict/list (OmegaConf containers included)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def normalize(cfg: Mapping[str, Any], where: str = PREFIX) -> dict[str, Any]:
    """Every key present with its default, every value checked; raises ConfigError otherwise."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where} must be a mapping with a 'name' key, got {cfg!r}")
    cfg = plain(cfg)
    name = cfg.get("name")
    if name not in DEFAULTS:
        raise ConfigError(
            f"{where}.name={name!r} is not a packager; choose one of {', '.join(NAMES)} "
            f"(e.g. nrun/packager=git){_suggest(name, NAMES)}"
        )
    valid = DEFAULTS[name]
    unknown = [k for k in cfg if k not in valid]
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"{where}.{key}: unknown key for packager {name}; valid keys: {', '.join(valid)}"
            f"{_suggest(key, list(valid))}"
        )
    out = {**plain(valid), **cfg}
    _CHECKS[name](out, where)
    return out


def _check_git(c: dict[str, Any], where: str) -> None:
    c["ref"] = _string(c, "ref", where)
    if not c["ref"] or c["ref"].startswith("-") or any(ch.isspace() for ch in c["ref"]):
        raise ConfigError(f"{where}.ref={c['ref']!r} is not a git ref; use a branch, tag or commit (default HEAD)")
    c["subpath"] = _relative(c, "subpath", where, "a directory inside the repository")
    c["submodules"] = _bool(c, "submodules", where)
    if c["on_dirty"] not in ON_DIRTY:
        raise ConfigError(
            f"{where}.on_dirty={c['on_dirty']!r} is not a policy; use error (refuse uncommitted changes), "
            "warn (pack the ref and go on) or include (pack the working tree as it is)"
        )
    c["exclude"] = _patterns(c, "exclude", where)


def _check_pattern(c: dict[str, Any], where: str) -> None:
    c["base_dir"] = _string(c, "base_dir", where) or "."
    for key in ("include", "exclude"):
        value = c[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{key} must be a list of glob strings, e.g. {key}='[\"src/**\",\"*.yaml\"]'")
        c[key] = value
    if not c["include"]:
        raise ConfigError(f"{where}.include is empty, so nothing would be packed; list globs such as ['**/*.py']")


def _check_workdir(c: dict[str, Any], where: str) -> None:
    c["base_dir"] = _string(c, "base_dir", where) or "."
    c["exclude"] = _patterns(c, "exclude", where)


def _patterns(c: dict[str, Any], key: str, where: str) -> list[str]:
    value = c.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ConfigError(f"{where}.{key}={value!r}: must be a list of .gitignore-style patterns, "
                          "e.g. ['/outputs/', '/multirun/', '*.ckpt']")
    return list(value)


def _check_hybrid(c: dict[str, Any], where: str) -> None:
    c["merge"] = _bool(c, "merge", where)
    parts = c["parts"]
    if not isinstance(parts, dict) or not parts:
        raise ConfigError(
            f"{where}.parts must map subfolder names to packagers, e.g. "
            f"parts: {{code: {{name: git}}, data: {{name: pattern, include: ['*.csv']}}}}"
        )
    checked = {}
    for key, part in parts.items():
        if not c["merge"]:
            norm = posixpath.normpath(key) if key else ""
            if not key or key.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
                raise ConfigError(
                    f"{where}.parts.{key or '<empty>'}: part names are subfolders of the artifact and must be "
                    "relative paths inside it; set merge=true to put every part at the root"
                )
        sub = normalize(part, f"{where}.parts.{key}")
        if sub["name"] == "passthrough":
            raise ConfigError(f"{where}.parts.{key}: passthrough packs nothing; use git, pattern, workdir or hybrid")
        checked[key] = sub
    c["parts"] = checked
    wf = c["workdir_from"]
    if wf is not None and wf not in checked:
        raise ConfigError(f"{where}.workdir_from={wf!r} is not a part; choose one of {', '.join(checked)} (or null for the first)")


_CHECKS = {
    "passthrough": lambda c, w: None,
    "git": _check_git,
    "pattern": _check_pattern,
    "hybrid": _check_hybrid,
    "workdir": _check_workdir,
}


def _string(c: dict[str, Any], key: str, where: str) -> str:
    value = c[key]
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be a string, got {value!r}")
    return str(value)


def _bool(c: dict[str, Any], key: str, where: str) -> bool:
    value = c[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
    return value


def _relative(c: dict[str, Any], key: str, where: str, what: str) -> str:
    """A normalized relative POSIX path ("" for the root); refuses absolute paths and '..' escapes."""
    raw = _string(c, key, where).strip()
    if not raw or raw in (".", "./"):
        return ""
    norm = posixpath.normpath(raw.replace("\\", "/"))
    if raw.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ConfigError(f"{where}.{key}={raw!r} escapes the repository; it must be {what}, e.g. {key}=src")
    return "" if norm == "." else norm


def _suggest(word: Any, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
