"""The payload of a point: everything the point runtime needs to run it without composing again.

Written by the launcher into the point's own nrun dir (``<job dir>/.nrun/<sweep id>/point.json``),
read by ``nrun_core/runtime/point.py`` wherever the point lands. JSON around pickles of the
composed config, pickled so that it stays exactly what Hydra composed (structured-config types,
enums, flags, the resolver cache that keeps ``${now:...}`` equal across points). Each payload is
whole on its own (no file shared between points to ship), but Hydra's node is pickled once per
sweep and each point carries only what differs from it (``Pickler``).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Set

from omegaconf import DictConfig, Node, OmegaConf, open_dict, read_write

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
    """Pickles the points' configs of one sweep: Hydra's node once, each point's own part apart.

    Hydra's node (~170 nodes, ~16 KB pickled with nrun_slurm's options) is nearly the same in
    every point of a sweep; pickling it per point was most of the launcher's CPU on a 10,000-point
    sweep. So the first point's node is pickled once (the *base*); every point then pickles its
    app part (every key but ``hydra``) and the few subtrees of its Hydra node that differ from
    the base (job.num, job.id, overrides.task, ...), found by a walk that compares nodes without
    pickling them. The point runtime puts the base and the patches back together
    (``runtime.point.load_config``). A point whose Hydra node differs at the top, in many places
    or in anything the walk does not know is pickled whole, as before.

    The plugin nodes (nrun's launcher schema, a sweeper plugin) are the same in every point
    too; their plain form is built once and swapped in only while a config is pickled.
    """

    MAX_PATCHES = 32

    def __init__(self) -> None:
        self._plain: Optional[Dict[str, DictConfig]] = None
        self._base: Optional[Any] = None     # a frozen copy of the base's Hydra node, to compare
        self._base_pickle: str = ""          # the base as the points' payloads carry it

    def config(self, cfg: DictConfig) -> Dict[str, Any]:
        """The payload's ``config`` entry for this point."""
        try:
            with self._plain_plugins(cfg):
                return self._split(cfg) or {"pickle": _b64(pickle.dumps(cfg, protocol=4))}
        except Exception:
            return {"pickle": _b64(pickle.dumps(portable(cfg), protocol=4))}

    def dumps(self, cfg: DictConfig) -> bytes:
        """The whole config as one pickle (what ``config`` falls back to)."""
        try:
            with self._plain_plugins(cfg):
                return pickle.dumps(cfg, protocol=4)
        except Exception:
            return pickle.dumps(portable(cfg), protocol=4)

    def _split(self, cfg: DictConfig) -> Optional[Dict[str, Any]]:
        root = cfg.__dict__
        content = root["_content"]
        hydra = content.get("hydra") if type(content) is dict else None
        if not isinstance(hydra, DictConfig):
            return None
        if self._base is None:
            from nrun_core.compose import clone

            self._base = clone(hydra)
            self._base_pickle = _b64(_detached_pickle(hydra))
        patches: List[List[Any]] = []
        if not _diff(self._base, hydra, [], patches) or len(patches) > self.MAX_PATCHES:
            return None
        patch = [[path, _b64(_detached_pickle(_at(hydra, path)))] for path in patches]
        at = list(content).index("hydra")
        root["_content"] = {k: v for k, v in content.items() if k != "hydra"}
        try:
            app = pickle.dumps(cfg, protocol=4)
        finally:
            root["_content"] = content
        return {"pickle": _b64(app), "hydra": {"base": self._base_pickle, "at": at, "patch": patch}}

    @contextmanager
    def _plain_plugins(self, cfg: DictConfig) -> Iterator[None]:
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
            yield
        finally:
            content.update(saved)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _detached_pickle(node: Any) -> bytes:
    """A subtree pickled without its parent (which pickle would otherwise follow up the tree)."""
    d = node.__dict__
    parent = d["_parent"]
    d["_parent"] = None
    try:
        return pickle.dumps(node, protocol=4)
    finally:
        d["_parent"] = parent


def _at(node: Any, path: List[Any]) -> Any:
    for key in path:
        node = node.__dict__["_content"][key]
    return node


_SAME_NODE_KEYS = frozenset({"_content", "_val", "_metadata", "_parent", "_flags_cache"})


def _diff(a: Any, b: Any, path: List[Any], out: List[List[Any]]) -> bool:
    """Append to ``out`` the paths of the subtrees of ``b`` that differ from ``a``; False when
    they differ at ``path`` itself and ``path`` is the top (no patch can say it)."""
    da, db = a.__dict__, b.__dict__
    same = type(a) is type(b) and da["_metadata"].__dict__ == db["_metadata"].__dict__
    if same and da.keys() != db.keys():
        same = False
    if same:
        for k in da.keys() - _SAME_NODE_KEYS:  # an EnumNode's type and members, a plugin's own
            if da[k] != db[k]:
                same = False
                break
    if same:
        ca, cb = da.get("_content", _NONE), db.get("_content", _NONE)
        if ca is _NONE:  # a value node
            va, vb = da.get("_val"), db.get("_val")
            same = va is vb or (type(va) is type(vb) and va == vb)
        elif type(ca) is dict and type(cb) is dict:
            if list(ca) != list(cb):
                same = False
            else:
                for k, va in ca.items():
                    if not isinstance(k, (str, int)) or isinstance(k, bool):
                        return False  # a key JSON cannot carry: pickle the point whole
                    if not _diff(va, cb[k], path + [k], out):
                        return False
                return True
        elif type(ca) is list and type(cb) is list:
            if len(ca) != len(cb):
                same = False
            else:
                for i, va in enumerate(ca):
                    if not _diff(va, cb[i], path + [i], out):
                        return False
                return True
        elif isinstance(ca, Node) or isinstance(cb, Node):
            same = False  # a union node's value: replace the node whole
        else:  # None, "???" or an interpolation string
            same = type(ca) is type(cb) and ca == cb
    if same:
        return True
    if not path:
        return False
    out.append(path)
    return True


_NONE = object()


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
    config = (pickler or Pickler()).config(cfg)
    config["omegaconf"] = _OMEGACONF
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
        "config": config,
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


_KNOWN: Set[str] = set()  # dirs known to exist: the parents of the job dirs (a sweep dir)


def _mkdirs(nrun_dir: str) -> None:
    """os.makedirs for a point's ``<job dir>/.nrun/<sweep id>``, no stat calls: once the job
    dir's parent is known to exist, three mkdirs downward; else from the bottom up (then the
    parent is known)."""
    chain, p = [], nrun_dir
    while p not in _KNOWN:
        if len(chain) == 3 or p == os.path.dirname(p):
            _mkdirs_up(nrun_dir)
            if len(_KNOWN) > 64:
                _KNOWN.clear()
            _KNOWN.add(os.path.dirname(os.path.dirname(os.path.dirname(nrun_dir))))
            return
        chain.append(p)
        p = os.path.dirname(p)
    for d in reversed(chain):
        try:
            os.mkdir(d)
        except FileExistsError:
            pass
        except FileNotFoundError:  # the known parent is gone: forget it, go the long way
            _KNOWN.discard(p)
            _mkdirs_up(nrun_dir)
            return


def _mkdirs_up(path: str) -> None:
    """Try the dir, then its parent where that is missing, and so on up."""
    if not path or path == os.path.dirname(path):  # '' or the root
        return
    try:
        os.mkdir(path)
    except FileNotFoundError:
        _mkdirs_up(os.path.dirname(path))
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
