"""The fast composer must give exactly what Hydra's own composition gives, point for point."""

from __future__ import annotations

from pathlib import Path

import copy

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from nrun_core.compose import FastComposer, clone, quick_parse

CONF = Path(__file__).parent / "apps" / "conf_groups"


@pytest.fixture
def loader_and_master():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        gh = GlobalHydra.instance()
        loader = gh.config_loader()
        from hydra.types import RunMode

        master = loader.load_configuration("app", overrides=["hydra.sweep.dir=/tmp/x"], run_mode=RunMode.MULTIRUN)
        yield loader, master
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("overrides", [
    ["lr=0.5"],
    ["lr=0.5", "model=large"],
    ["model=large", "model.width=7"],
    ["+extra=3", "lr=1e-3"],
    ["++lr=2", "name='a b; $(x)'"],
    ["model=small", "tags=[a,b]", "opt.momentum=0.8"],
    ["lr=-3", "name=big_one", "opt.momentum=1.5e-3"],   # the quick parser's forms
    ["+x=0", "++name=007", "lr=1_000"],                 # Hydra's parser's (not quick)
    ["hydra.job.chdir=true", "lr=2"],                   # a hydra.* override with a value
    ["lr=0.5", "name=x", "model.width=9", "+y=a"],      # several values at once
])
def test_fast_path_equals_hydra(loader_and_master, overrides):
    loader, master = loader_and_master
    full = loader.load_sweep_config(master, overrides)
    composer = FastComposer(loader)
    fast = composer.load_sweep_config(master, overrides)
    fast_again = composer.load_sweep_config(master, overrides)  # from the cached base
    for cfg in (fast, fast_again):
        assert OmegaConf.to_container(cfg, resolve=False) == OmegaConf.to_container(full, resolve=False)
    assert composer.fast_hits == 2


def test_bad_override_gets_hydras_own_error(loader_and_master):
    loader, master = loader_and_master
    composer = FastComposer(loader)
    with pytest.raises(Exception) as fast_err:
        composer.load_sweep_config(master, ["lrr=1"])
    with pytest.raises(Exception) as full_err:
        loader.load_sweep_config(master, ["lrr=1"])
    assert str(fast_err.value) == str(full_err.value)


def _walk(node, path=""):
    """Every node of a config with its path, containers included."""
    yield path, node
    content = node.__dict__.get("_content")
    items = content.items() if isinstance(content, dict) else enumerate(content) if isinstance(content, list) else ()
    for k, child in items:
        yield from _walk(child, f"{path}.{k}")


def test_clone_is_what_deepcopy_gives(loader_and_master):
    """Same classes, values, flags, metadata and resolver cache as copy.deepcopy; parents point
    into the copy; no node or mutable metadata is shared with the original."""
    loader, master = loader_and_master
    cfg = loader.load_sweep_config(master, ["model=large", "lr=0.5"])
    OmegaConf.set_readonly(cfg.hydra.runtime, True)
    OmegaConf.get_cache(cfg)["now"][("%H",)] = "12"
    ours, ref = clone(cfg), copy.deepcopy(cfg)
    assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(ref) == OmegaConf.to_yaml(cfg)
    assert OmegaConf.get_cache(ours) == OmegaConf.get_cache(ref)
    assert OmegaConf.get_cache(ours) is not OmegaConf.get_cache(cfg)
    src, mine, theirs = dict(_walk(cfg)), dict(_walk(ours)), dict(_walk(ref))
    assert list(mine) == list(theirs) == list(src)
    for path, node in mine.items():
        assert type(node) is type(theirs[path]), path
        assert vars(node._metadata) == vars(theirs[path]._metadata), path
        assert node is not src[path] and node._metadata is not src[path]._metadata, path
        assert node._metadata.flags is not src[path]._metadata.flags, path
        if path:
            assert node._get_parent() is mine[path.rsplit(".", 1)[0]], path
    assert OmegaConf.is_readonly(ours.hydra.runtime) and OmegaConf.is_struct(ours.hydra)
    ours.model.width = 5
    OmegaConf.set_readonly(ours.hydra.runtime, False)
    assert cfg.model.width == 100 and OmegaConf.is_readonly(cfg.hydra.runtime)


@pytest.mark.parametrize("line", [
    "x=1", "+x=-5", "++a.b=0.5", "lr=1e-3", "lr=2.5E+4", "name=abc", "_a.b_c=_d9", "x=0", "x=-0",
    "deep.a.b.c=-12.75",
])
def test_quick_parse_equals_hydras_parser(line):
    (hydra,) = OverridesParser.create().parse_overrides([line])
    assert quick_parse(line) == hydra


@pytest.mark.parametrize("line", [
    "x=007", "x=1_000", "x=true", "x=NULL", "x=inf", "x=nan", "x=1.", "x=.5", "x=a.b", "x= 3", "x=[1]",
    "x='a'", "x=${y}", "~x", "x", "model@pkg=a", "x/y=z", "a-b=c", "x=1,2", "x=é", "x=١",
])
def test_quick_parse_leaves_the_rest_to_hydra(line):
    assert quick_parse(line) is None


def test_the_sweepers_validation_checks_each_point_on_its_own(loader_and_master):
    """Hydra's Sweeper.validate_batch_is_legal goes through the installed composer: points are
    checked on one scratch copy, and no point's values leak into the next point or the configs."""
    from types import SimpleNamespace

    from hydra.plugins.sweeper import Sweeper

    loader, master = loader_and_master
    plain = loader.load_sweep_config
    composer = FastComposer(loader).install()
    sweeper = SimpleNamespace(hydra_context=SimpleNamespace(config_loader=loader), config=master)
    Sweeper.validate_batch_is_legal(sweeper, [  # each `+` fails if an earlier point's key stayed
        ["+extra=3", "lr=1"], ["+extra=4"], ["lr=2", "opt.momentum=0.5"], ["+opt.nesterov=true"],
        ["+opt.nesterov=false"], ["model=large", "model.width=7"], ["model=large", "+model.depth=2"],
        ["model=large", "+model.depth=3"], ["tags=[a]"], ["tags=[b,c]"]])
    with pytest.raises(Exception) as ours:
        Sweeper.validate_batch_is_legal(sweeper, [["lr=1"], ["lrr=1"]])
    with pytest.raises(Exception) as hydras:
        plain(master, ["lrr=1"])
    assert str(ours.value) == str(hydras.value)
    for overrides in (["lr=2"], ["model=large", "model.width=8"], ["+extra=5"]):
        mine = composer.take(master, overrides)
        assert OmegaConf.to_container(mine, resolve=False) == OmegaConf.to_container(
            plain(master, overrides), resolve=False)
