"""The fast composer must give exactly what Hydra's own composition gives, point for point."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from nrun_core.compose import FastComposer

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
