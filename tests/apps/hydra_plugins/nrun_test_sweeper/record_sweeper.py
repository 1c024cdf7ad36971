"""A sweeper that records what the launcher handed back, as Optuna and friends would read it."""

import json
import os
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


@dataclass
class RecordSweeperConf:
    _target_: str = "hydra_plugins.nrun_test_sweeper.record_sweeper.RecordSweeper"
    max_batch_size: int = 2


ConfigStore.instance().store(group="hydra/sweeper", name="nrun_test_record", node=RecordSweeperConf)


class RecordSweeper(BasicSweeper):
    """Batches of `max_batch_size`; writes every JobReturn's status and value to $RECORD_FILE."""

    def sweep(self, arguments):
        launch = self.launcher.launch
        seen = []

        def recording_launch(job_overrides, initial_job_idx):
            returns = launch(job_overrides, initial_job_idx)
            for r in returns:
                ok = r.status.name == "COMPLETED"
                seen.append({"overrides": list(r.overrides), "status": r.status.name,
                             "value": r.return_value if ok else str(r._return_value).splitlines()[0],
                             **(_configs(r) if os.environ.get("RECORD_CONFIGS") else {})})
            with open(os.environ["RECORD_FILE"], "w") as f:
                json.dump(seen, f)
            return returns

        self.launcher.launch = recording_launch
        return super().sweep(arguments)


def _configs(r):
    """What a sweeper can read of a JobReturn besides its value (RECORD_CONFIGS=1)."""
    from omegaconf import OmegaConf

    job = r.hydra_cfg.hydra.job
    return {"cfg": OmegaConf.to_container(r.cfg), "working_dir": r.working_dir, "task_name": r.task_name,
            "job": {"num": job.num, "name": job.name, "override_dirname": job.override_dirname},
            "output_dir": r.hydra_cfg.hydra.runtime.output_dir,
            "task_overrides": list(r.hydra_cfg.hydra.overrides.task)}
