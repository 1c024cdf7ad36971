"""Composing sweep points fast: compose once per choice of config groups, then apply values.

Hydra composes each point from scratch (defaults tree, YAML loads, merges: ~70 ms), and its
BasicSweeper does it once more to validate every point before launching. Points of a sweep
usually differ only in values (`lr=0.1,0.01`), which Hydra applies *after* composing the
defaults tree. So the composer keeps one composed base per set of group choices and builds each
point as a clone of that base (~0.5 ms; `copy.deepcopy` takes ~4 ms) with the point's value
overrides applied the way Hydra applies them, then fills in what Hydra derives from the
overrides (hydra.overrides.task, hydra.job.override_dirname).

Anything it cannot prove equivalent takes Hydra's own path: group choices, deletions, package
overrides, `hydra.*` keys, or any error (so the user sees Hydra's own message). The launcher
installs it on the config loader instance Hydra gave it, so the sweeper's validation uses it too.

Memory stays flat for large sweeps: the configs the sweeper's validation composed are kept for
the launcher to take only up to KEEP of them; past that a point is composed again when needed
(cheap on the fast path), instead of holding ~100 KB per point for 10,000 points.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Tuple

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from omegaconf import DictConfig, Node, open_dict

from nrun_core.errors import ConfigError

KEEP = 256           # composed configs held in memory (~100 KB each); more are composed again
_PARSED_MAX = 100_000  # parsed overrides remembered (a grid repeats its values across points)


def keep() -> int:
    """How many composed configs a sweep holds: NRUN_KEEP_CONFIGS, default KEEP."""
    raw = os.environ.get("NRUN_KEEP_CONFIGS", "")
    if not raw:
        return KEEP
    try:
        return max(0, int(raw))
    except ValueError:
        raise ConfigError(f"NRUN_KEEP_CONFIGS={raw!r} is not a number of configs; unset it or set "
                          f"e.g. NRUN_KEEP_CONFIGS={KEEP}") from None


class FastComposer:
    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.full: Callable[[DictConfig, List[str]], DictConfig] = loader.load_sweep_config
        self._parser = OverridesParser.create()
        self._bases: Dict[Tuple[int, Tuple[str, ...]], DictConfig] = {}
        self._clonable: Dict[int, bool] = {}
        self._validated: Dict[Tuple[int, Tuple[str, ...]], DictConfig] = {}
        self._scratch: Dict[Tuple[int, Tuple[str, ...]], DictConfig] = {}
        self._lent: Optional[Tuple[DictConfig, DictConfig]] = None  # (scratch, its base) while lent
        self._parsed: Dict[str, Tuple[Override, bool]] = {}
        self._groups: Dict[str, bool] = {}  # key -> is it a config group (the same all sweep long)
        self.keep = keep()
        self.fast_hits = 0

    def install(self) -> "FastComposer":
        """Put the fast path on Hydra's loader (once); returns the composer in place."""
        current = getattr(self.loader, "load_sweep_config", None)
        if isinstance(current, _Installed):
            return current.composer
        self.loader.load_sweep_config = _Installed(self)
        return self

    def take(self, master: DictConfig, overrides: List[str]) -> DictConfig:
        """The point's config: the one the sweeper's own validation just composed (Hydra's
        BasicSweeper composes every point of a batch before launching it, then drops it), else
        a fresh composition. Each composed config is handed out at most once more."""
        cfg = self._validated.pop((id(master), tuple(overrides)), None)
        return cfg if cfg is not None else self.load_sweep_config(master, overrides, keep=False)

    def load_sweep_config(self, master: DictConfig, overrides: List[str], keep: bool = True) -> DictConfig:
        cfg = self._compose(master, overrides)
        if keep:
            self._keep(master, overrides, cfg)
        return cfg

    def validate(self, master: DictConfig, overrides: List[str]) -> DictConfig:
        """What Hydra's Sweeper.validate_batch_is_legal asks for (it drops the config): proof that
        the point composes. A point of values is checked by applying them to one scratch copy of
        its base, whose app part (every key but `hydra`) is then put back from the base: no copy
        of Hydra's own node per point. Anything else is composed (and kept for `take`)."""
        parsed = self._parse(overrides)
        split = self._split(master, parsed) if parsed is not None else None
        if split is not None:
            key, values = split
            base = self._bases.get(key)
            if base is not None and self._clonable.get(id(base)):
                scratch = self._scratch.get(key)
                if scratch is None:
                    scratch = self._scratch[key] = clone(base)
                if self._lent is not None and self._lent[0] is scratch:
                    return self.load_sweep_config(master, overrides)  # lent out: compose instead
                try:
                    ConfigLoaderImpl._apply_overrides_to_config(values, scratch)
                    return scratch
                except Exception:
                    pass  # Hydra's own path below gives its own message
                finally:
                    _put_back(scratch, base)
        return self.load_sweep_config(master, overrides)

    def _keep(self, master: DictConfig, overrides: List[str], cfg: DictConfig) -> None:
        if len(self._validated) < self.keep:
            self._validated[(id(master), tuple(overrides))] = cfg

    def _split(self, master: DictConfig, parsed: List[Tuple[Override, bool]]) -> Optional[Tuple[Any, List[Override]]]:
        """(the key of the point's base, its value overrides), or None: no fast path for it."""
        values = [o for o, s in parsed if not s]
        if not values:
            return None
        return (id(master), tuple(o.input_line for o, s in parsed if s)), values

    def _compose(self, master: DictConfig, overrides: List[str]) -> DictConfig:
        parsed = self._parse(overrides)
        split = self._split(master, parsed) if parsed is not None else None
        if parsed is None or split is None:
            return self.full(master, list(overrides))
        key, values = split
        try:
            base = self._bases.get(key)
            if base is None:
                base = self._bases[key] = self.full(master, list(key[1]))
            cfg = self._copy(base)
            _apply(cfg, parsed, values)
        except Exception:
            return self.full(master, list(overrides))  # Hydra's own path and error message
        self.fast_hits += 1
        return cfg

    def lend(self, master: DictConfig, overrides: List[str]) -> Optional[DictConfig]:
        """The point's config built in place on the scratch copy of its base, for a caller that
        uses it at once and hands it back (`give_back`) before asking for the next: no copy of
        Hydra's node per point. None when the point has no fast path (compose it then)."""
        parsed = self._parse(overrides)
        split = self._split(master, parsed) if parsed is not None else None
        if parsed is None or split is None or self._lent is not None:
            return None
        key, values = split
        base = self._bases.get(key)
        if base is None or not self._clonable.get(id(base)):
            return None
        scratch = self._scratch.get(key)
        if scratch is None:
            scratch = self._scratch[key] = clone(base)
        try:
            _apply(scratch, parsed, values)
        except Exception:
            _put_back(scratch, base)
            return None
        self._lent = (scratch, base)
        self.fast_hits += 1
        return scratch

    def give_back(self, cfg: DictConfig) -> bool:
        """Take back a config `lend` gave (its app part is put back as in the base); False if it
        is not one."""
        if self._lent is None or self._lent[0] is not cfg:
            return False
        scratch, base = self._lent
        self._lent = None
        _put_back(scratch, base)
        return True

    def _parse(self, overrides: List[str]) -> Optional[List[Tuple[Override, bool]]]:
        """Each override parsed once per sweep, with whether it is structural; None if one does
        not parse (Hydra's own path then gives its own message)."""
        out = []
        for line in overrides:
            hit = self._parsed.get(line)
            if hit is None:
                o = quick_parse(line)
                if o is None:
                    try:
                        (o,) = self._parser.parse_overrides([line])
                    except Exception:
                        return None
                hit = (o, self._structural(o))
                # a dict or list value is handed to OmegaConf as is: parse it afresh each time
                if not isinstance(o._value, (dict, list)) and len(self._parsed) < _PARSED_MAX:
                    self._parsed[line] = hit
            out.append(hit)
        return out

    def task_overrides(self, overrides: List[str]) -> List[str]:
        """What Hydra files under hydra.overrides.task: the point's non-hydra overrides, in order."""
        parsed = self._parse(overrides)
        if parsed is None:
            return [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        return [o.input_line for o, _ in parsed if not o.is_hydra_override()]

    def _copy(self, base: DictConfig) -> DictConfig:
        ok = self._clonable.get(id(base))
        if ok is None:
            ok = self._clonable[id(base)] = _clonable(base)
        return clone(base) if ok else copy.deepcopy(base)

    def _structural(self, o: Override) -> bool:
        """Does this override change the defaults tree (or Hydra itself) rather than a value?"""
        if o.is_hydra_override() or o.package is not None or o.type == OverrideType.DEL:
            return True
        if o.is_sweep_override():
            return True
        key = o.key_or_group
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = bool(self.loader.repository.group_exists(key)) or key.startswith("nrun/")
        return group


# -- parsing the simplest overrides without Hydra's grammar (~0.4 ms each with it) ----------
# `[+|++]key.path=value` with an integer, a plain decimal, or a plain word as the value: the
# same Override Hydra's parser makes (tests/test_compose.py compares them); anything else goes
# to Hydra's parser.
_QUICK = re.compile(r"(\+{0,2})([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)=(?:(-?(?:0|[1-9]\d*))|"
                    r"(-?\d+\.\d+(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+)|([A-Za-z_]\w*))", re.ASCII)
_WORDS = frozenset({"true", "false", "null", "nan", "inf"})  # words Hydra reads as non-strings
_TYPES = {"": OverrideType.CHANGE, "+": OverrideType.ADD, "++": OverrideType.FORCE_ADD}


def quick_parse(line: str) -> Optional[Override]:
    m = _QUICK.fullmatch(line)
    if m is None:
        return None
    prefix, key, integer, decimal, word = m.groups()
    if integer is not None:
        value: Any = int(integer)
    elif decimal is not None:
        value = float(decimal)
    elif word.lower() in _WORDS:
        return None
    else:
        value = word
    return Override(type=_TYPES[prefix], key_or_group=key, value_type=ValueType.ELEMENT, _value=value,
                    package=None, input_line=line)


# -- cloning a composed config ------------------------------------------------------------
# What copy.deepcopy of an OmegaConf config does (DictConfig/ListConfig/ValueNode.__deepcopy__):
# new nodes of the same classes, metadata copied (its flags and resolver cache too), values kept
# as they are (they are immutable leaves), parents pointing into the copy; the flags cache is
# recomputed on demand. Done directly it costs an eighth of deepcopy's generic machinery. Used
# only on configs whose every node has the attributes known here (else deepcopy).
_NODE_ATTRS = frozenset({"_metadata", "_parent", "_flags_cache", "_content", "_val",
                         "enum_type", "fields"})  # an EnumNode's type and its members: never changed


def clone(node: Any, parent: Any = None) -> Any:
    """A deep copy of an OmegaConf node (and its subtree), attached to ``parent``."""
    src = node.__dict__
    cls = type(node)
    new = cls.__new__(cls)
    d = new.__dict__
    d.update(src)
    d["_metadata"] = _copy_metadata(src["_metadata"])
    d["_parent"] = parent
    d["_flags_cache"] = None
    content = src.get("_content")
    if type(content) is dict:
        d["_content"] = {k: clone(v, new) for k, v in content.items()}
    elif type(content) is list:
        d["_content"] = [clone(v, new) for v in content]
    elif isinstance(content, Node):  # a UnionNode's value
        d["_content"] = clone(content, new)
    return new


def _apply(cfg: DictConfig, parsed: List[Tuple[Override, bool]], values: List[Override]) -> None:
    """A point's value overrides on a copy of its base, and what Hydra derives from them."""
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
    # Hydra files every non-hydra override of the point under task, in command-line order, and
    # names the job's override_dirname after those only
    app = [o for o, _ in parsed if not o.is_hydra_override()]
    hydra = cfg._get_node("hydra")
    set_field(hydra._get_node("overrides"), "task", [o.input_line for o in app])
    job = hydra._get_node("job")
    oc = job.config.override_dirname
    set_field(job, "override_dirname", get_overrides_dirname(
        overrides=app, kv_sep=oc.kv_sep, item_sep=oc.item_sep, exclude_keys=oc.exclude_keys))


def set_field(node: Any, key: str, value: Any) -> None:
    """`node.key = value` for a field Hydra's schema declares (hydra.job.num, ...): what
    OmegaConf's assignment does for a typed field (validate, then set the field's own node),
    without its per-call checks of flags up the tree; any other case through OmegaConf."""
    field = node._get_node(key) if isinstance(node, DictConfig) else None
    if field is not None and field._has_ref_type() and not node._get_flag("readonly"):
        field._set_value(value)
        return
    with open_dict(node):
        setattr(node, key, value)


def dispose(cfg: Any) -> None:
    """Unlink a config nobody uses any more from its nodes' parents: its nodes are then freed
    at once by reference counting, instead of waiting as cyclic garbage (child -> parent)
    for the cyclic collector, whose passes over thousands of them cost more than making them."""
    stack = [cfg]
    while stack:
        d = stack.pop().__dict__
        d["_parent"] = None
        content = d.get("_content")
        if type(content) is dict:
            stack.extend(content.values())
        elif type(content) is list:
            stack.extend(content)
        elif isinstance(content, Node):
            stack.append(content)


def _put_back(scratch: DictConfig, base: DictConfig) -> None:
    """The app part of `scratch` (every top-level key but hydra) as it is in `base` again."""
    content, original = scratch.__dict__["_content"], base.__dict__["_content"]
    for k in [k for k in content if k not in original]:
        del content[k]
    for k, node in original.items():
        if k != "hydra":
            content[k] = clone(node, scratch)
    if list(content) != list(original):  # keep the key order of the base
        scratch.__dict__["_content"] = {k: content[k] for k in original}


def _copy_metadata(meta: Any) -> Any:
    new = object.__new__(type(meta))
    new.__dict__.update(meta.__dict__)
    if meta.flags is not None:
        new.flags = dict(meta.flags)
    cache = meta.resolver_cache
    new.resolver_cache = copy.deepcopy(cache) if cache else defaultdict(dict)
    return new


def _clonable(node: Any) -> bool:
    if not isinstance(node, Node) or not set(node.__dict__) <= _NODE_ATTRS:
        return False
    meta = node.__dict__.get("_metadata")
    if meta is None or not hasattr(meta, "__dict__") or not hasattr(meta, "resolver_cache"):
        return False
    content = node.__dict__.get("_content")
    if type(content) is dict:
        return all(_clonable(v) for v in content.values())
    if type(content) is list:
        return all(_clonable(v) for v in content)
    return _clonable(content) if isinstance(content, Node) else True


class _Installed:
    """The bound fast path, marked so installing twice keeps one layer."""

    def __init__(self, composer: FastComposer) -> None:
        self.composer = composer

    def __call__(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        if sys._getframe(1).f_code is _validate_code():  # the sweeper's check, which drops the config
            return self.composer.validate(master_config, sweep_overrides)
        return self.composer.load_sweep_config(master_config, sweep_overrides)


def _validate_code() -> Any:
    from hydra.plugins.sweeper import Sweeper

    return Sweeper.validate_batch_is_legal.__code__
