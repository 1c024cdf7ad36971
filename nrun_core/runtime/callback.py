"""Hydra callback that records a point's return value when the point runs as a command.

Added to the point's command line as
``++hydra.callbacks.nrun_result._target_=nrun_core.runtime.callback.ResultCallback``; the
executor sets ``NRUN_RESULT_FILE``. Under torchrun every rank runs the app; only rank 0 writes.
"""

from __future__ import annotations

import os
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback

from nrun_core.runtime.result import COMPLETED, FAILED, write_result


class ResultCallback(Callback):
    def on_job_end(self, config: Any, job_return: JobReturn, **kwargs: Any) -> None:
        path = os.environ.get("NRUN_RESULT_FILE")
        if not path or os.environ.get("RANK", "0") != "0":
            return
        if job_return.status == JobStatus.COMPLETED:
            write_result(path, status=COMPLETED, value=job_return._return_value)
        else:
            write_result(path, status=FAILED, error=job_return._return_value)
