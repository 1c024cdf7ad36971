"""The payload of a point: everything the point runtime needs to run it without composing again.

Written by the launcher into the point's own nrun dir (``<job dir>/.nrun/<sweep id>/point.json``),
read by ``nrun_core/runtime/point.py`` wherever the point lands. JSON around one pickle: the
composed config, pickled so that it stays exactly what Hydra composed (structured-config types,
enums, flags, the resolver cache that keeps ``${now:...}`` equal across points).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
from typing import Any, Dict, Optional, Set

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nrun_core.runtime.point import FORMAT

_OMEGACONF = __import__("omegaconf").__version__
from nrun_core.spec import JobSpec

# Parts of Hydra's own config whose structured types come from plugins (nrun's launcher schemas,
# a sweeper plugin): informational in a point, and not importable where nrun is not installed.
_PLUGIN_NODES = ("launcher", "sweeper")


def portable(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the plugin nodes of ``hydra`` as plain (untyped) configs, same values."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        for key in _PLUGIN_NODES:
            node = cfg.hydra.get(key)
            if OmegaConf.is_dict(node) and OmegaConf.get_type(node) not in (dict, None):
                cfg.hydra[key] = OmegaConf.create(OmegaConf.to_container(node, resolve=False))
    return cfg


class Pickler:
    """Pickles the points' configs of one sweep with their plugin nodes plain.

    The plugin nodes are the same in every point of a sweep (the launcher is set up once), so
    their plain form is built once and swapped into each config only while it is pickled: no
    per-point conversion (which costs ~10 ms a point for nrun_slurm's many options) and the
    launcher's own configs stay as composed. Any surprise falls back to ``portable``.
    """

    def __init__(self) -> None:
        self._plain: Optional[Dict[str, DictConfig]] = None

    def dumps(self, cfg: DictConfig) -> bytes:
        try:
            return self._swapped(cfg)
        except Exception:
            return pickle.dumps(portable(cfg), protocol=4)

    def _swapped(self, cfg: DictConfig) -> bytes:
        hydra = cfg.hydra
        if self._plain is None:
            self._plain = {}
            for key in _PLUGIN_NODES:
                node = hydra.get(key)
                if OmegaConf.is_dict(node) and OmegaConf.get_type(node) not in (dict, None):
                    self._plain[key] = OmegaConf.create(OmegaConf.to_container(node, resolve=False))
        content = hydra.__dict__["_content"]
        saved = {key: content[key] for key in self._plain}
        try:
            for key, plain in self._plain.items():
                plain._set_parent(hydra)
                plain._set_key(key)
                content[key] = plain
            return pickle.dumps(cfg, protocol=4)
        finally:
            content.update(saved)


def redact_secrets(cfg: DictConfig, secret: Set[str]) -> DictConfig:
    """The point's copy of nrun's own settings without secret values: Hydra would write them to
    the point's `.hydra/hydra.yaml` (hydra.launcher.env, and the override that set it); the
    values reach the point through its environment only."""
    if not secret:
        return cfg
    from nrun_core.options import redacted_argv

    with read_write(cfg.hydra), open_dict(cfg.hydra):
        env = cfg.hydra.launcher.get("env") if OmegaConf.is_dict(cfg.hydra.get("launcher")) else None
        if env is not None:
            for name in [k for k in env if k in secret]:
                env[name] = "<redacted>"
        hydra_overrides = cfg.hydra.overrides.hydra
        cfg.hydra.overrides.hydra = redacted_argv(list(hydra_overrides), secret)
    return cfg


def build(spec: JobSpec, cfg: DictConfig, task: Dict[str, Any], *, code_root: str,
          version_base: Optional[str], task_name: str, pickler: Optional[Pickler] = None) -> Dict[str, Any]:
    config = (pickler or Pickler()).dumps(cfg)
    return {
        "format": FORMAT,
        "identity": spec.identity,
        "task": task,
        "task_name": task_name,
        "version_base": version_base,
        "code_root": code_root,
        "launch_cwd": os.getcwd(),
        "job_dir": spec.job_dir,
        "result_file": spec.result_file,
        "config": {"pickle": base64.b64encode(config).decode(), "omegaconf": _OMEGACONF},
    }


def write(spec: JobSpec, payload: Dict[str, Any]) -> None:
    """Atomically, readable by the point's user only (its config may hold anything)."""
    path = spec.payload_file
    _mkdirs(os.path.dirname(path))
    tmp = f"{path}.{os.getpid()}.tmp"
    data = json.dumps(payload).encode()  # one write: json.dump to a file writes it in pieces
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _mkdirs(path: str) -> None:
    """os.makedirs for a dir whose grandparent usually exists: one mkdir a level, no stat calls."""
    if not path or path == os.path.dirname(path):  # '' or the root
        return
    try:
        os.mkdir(path)
    except FileNotFoundError:
        _mkdirs(os.path.dirname(path))
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
    except FileExistsError:
        pass


def version_base() -> Optional[str]:
    """The app's @hydra.main(version_base=...) as Hydra recorded it in this process."""
    from hydra import version

    base = version.getbase()
    return None if base is None or type(base) is type(version._UNSPECIFIED_) else str(base)
