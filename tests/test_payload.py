"""The point's config as the point runtime rebuilds it from its payload: equal to what Hydra
composed, for any sweep (values, config groups that set hydra.* keys, swept hydra.* settings),
though Hydra's own node travels once per sweep and each point carries only what differs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import List

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nrun_core import payload
from nrun_core.compose import set_field
from nrun_core.runtime.point import load_config

CONF = Path(__file__).parent / "apps" / "conf_hydra_groups"

SWEEPS = {
    "values": [["lr=0.1"], ["lr=0.2"], ["lr=0.3"]],
    "groups setting hydra keys": [["exp=plain"], ["exp=named"], ["exp=plain", "lr=2"]],
    "swept hydra settings": [["hydra.job.chdir=true"], ["hydra.job.chdir=false"],
                             ["hydra.job.name=other", "lr=5"]],
}


def _points(overrides: List[List[str]]):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        for num, ov in enumerate(overrides):
            cfg = compose(config_name="app", overrides=["hydra/launcher=nrun_local", *ov],
                          return_hydra_config=True)
            job = cfg._get_node("hydra")._get_node("job")
            set_field(job, "num", num)
            set_field(job, "id", f"sweep_{num}")
            yield cfg


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_rebuilt_config_equals_the_composed_one(sweep):
    pickler = payload.Pickler()
    for cfg in _points(SWEEPS[sweep]):
        entry = json.loads(json.dumps(pickler.config(cfg)))    # as the payload file carries it
        rebuilt = load_config(entry)
        composed = pickle.loads(pickler.dumps(cfg))            # the whole config, pickled at once
        assert OmegaConf.to_yaml(rebuilt) == OmegaConf.to_yaml(composed)
        for node in ("job", "sweep", "overrides"):  # what the point's job dir and .hydra/ files come from
            assert OmegaConf.to_yaml(rebuilt.hydra[node], resolve=True) == \
                OmegaConf.to_yaml(composed.hydra[node], resolve=True)
        assert rebuilt._get_node("hydra")._get_parent() is rebuilt
        assert payload._diff(composed, rebuilt, ["root"], []), "flags, types or metadata differ"
        assert list(rebuilt) == list(composed)                 # the keys in Hydra's order


def test_points_after_the_first_carry_only_their_differences():
    pickler = payload.Pickler()
    entries = [pickler.config(cfg) for cfg in _points(SWEEPS["values"])]
    whole = len(pickler.dumps(next(_points(SWEEPS["values"][:1]))))
    for entry in entries:
        assert entry["hydra"]["base"] is entries[0]["hydra"]["base"]  # built once for the sweep
        own = len(entry["pickle"]) + sum(len(blob) for _, blob in entry["hydra"]["patch"])
        assert own * 4 < whole, (own, whole)
        changed = {tuple(path[:2]) for path, _ in entry["hydra"]["patch"]}
        assert changed <= {("job", "id"), ("job", "num"), ("job", "override_dirname"), ("overrides", "task")}
