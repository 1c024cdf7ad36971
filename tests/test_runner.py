"""The runner's bookkeeping against a scripted backend: what any executor may report, in order."""

from __future__ import annotations

from typing import List

from nrun_core.executors.base import Ended, Executor, Request, Started, SweepContext
from nrun_core.progress import QuietView, Row
from nrun_core.runner import Runner
from nrun_core.spec import JobSpec
from nrun_core.store import Store


class ScriptedBackend(Executor):
    """Reports each start of a point as given by ``script``: 'fail-to-spawn', 'crash' or 'ok'."""

    def __init__(self, script: List[str]) -> None:
        super().__init__(None, SweepContext(sweep_id="s"))
        self.script, self.starts, self.pending = list(script), 0, []

    def render(self, specs):
        return [Request("x", "x")]

    def start(self, specs):
        self.pending.extend(specs)

    def busy(self):
        return bool(self.pending)

    def cancel(self, indices=None):
        pass

    def poll(self, timeout):
        events = []
        for spec in self.pending:
            what = self.script[self.starts] if self.starts < len(self.script) else "ok"
            self.starts += 1
            if what == "fail-to-spawn":
                events.append(Ended(spec.index, "exited", None, "could not start: no such file"))
            else:
                events += [Started(spec.index, "b1"), Ended(spec.index, "exited", 1 if what == "crash" else 0)]
        self.pending = []
        return events


def _run(tmp_path, script, retries):
    store = Store(tmp_path / "db")
    spec = JobSpec(sweep_id="s", index=0, overrides=[], job_dir=str(tmp_path / "job"), command=["x"])
    store.create_sweep("s", name="s", executor="local", state="RUNNING")
    store.add_points("s", [{"idx": 0, "overrides": [], "spec": spec.to_json()}])
    backend = ScriptedBackend(script)
    rows = {0: Row(0, "")}
    outcomes = Runner(store, "s", backend, [spec], rows, QuietView("s", rows), retries=retries).run()
    return outcomes[0], backend.starts, store.point("s", 0)


def test_a_point_that_never_starts_is_not_retried_forever(tmp_path):
    outcome, starts, point = _run(tmp_path, ["fail-to-spawn"] * 50, retries=0)
    assert outcome.state == "FAILED" and starts == 1 and "could not start" in outcome.error


def test_retries_count_attempts_that_never_started(tmp_path):
    outcome, starts, point = _run(tmp_path, ["fail-to-spawn", "crash", "fail-to-spawn", "crash"], retries=2)
    assert outcome.state == "FAILED" and starts == 3


def test_retry_that_succeeds_completes(tmp_path):
    from nrun_core.runtime.result import write_result

    spec = JobSpec(sweep_id="s", index=0, overrides=[], job_dir=str(tmp_path / "job"), command=["x"])

    class Writes(ScriptedBackend):
        def poll(self, timeout):
            if self.starts == 1:
                write_result(spec.result_file, status="COMPLETED", value=42, ident=spec.identity)
            return super().poll(timeout)

    store = Store(tmp_path / "db")
    store.create_sweep("s", name="s", executor="local", state="RUNNING")
    store.add_points("s", [{"idx": 0, "overrides": [], "spec": spec.to_json()}])
    rows = {0: Row(0, "")}
    backend = Writes(["crash", "ok"])
    out = Runner(store, "s", backend, [spec], rows, QuietView("s", rows), retries=1).run()
    assert out[0].state == "COMPLETED" and out[0].value == 42 and store.point("s", 0)["attempts"] == 2
