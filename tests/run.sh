#!/usr/bin/env bash
# Set up everything the test suite needs on a Debian machine, then run it.
#
#   bash tests/run.sh [pytest args...]
#
# Creates .venv (if missing) with nrun and its test extras, starts the real backends the tests
# use through nrun's own sandbox commands (a Slurm cluster, a Docker engine), and runs pytest
# with NRUN_REQUIRE naming them, so a test whose backend is missing fails instead of skipping.
# Needs root (or sudo) the first time: the sandboxes install Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
pip install -q --disable-pip-version-check -e ".[test,bench]" --config-settings editable_mode=compat \
    2>&1 | grep -v "is ignored: it is neither" || true
# The example executor of another package (entry point `nrun.executors`): the conformance suite
# runs every scenario on it too.
pip install -q --disable-pip-version-check --no-deps -e examples/executor_plugin --config-settings editable_mode=compat \
    2>&1 | grep -v "is ignored: it is neither" || true
python -c 'import hydra_plugins.nrun_launcher, nrun_core.cli, nrun_example_executor' || { echo "nrun did not install" >&2; exit 1; }

# The Docker sandbox also builds its cached torch image (the multi-node torchrun tests need it).
export NRUN_SANDBOX_TORCH="${NRUN_SANDBOX_TORCH:-1}"
# lepton, dgxcloud: their vendor SDKs (test extras) against the fakes in tests/fakes, jobs on Docker.
require=torch,executor-plugin,lepton,dgxcloud
for box in ${NRUN_SANDBOXES:-slurm docker ssh skypilot kube}; do
    echo "--- nrun sandbox $box up"
    start=$(date +%s)
    eval "$(nrun sandbox "$box" up)"
    echo "--- $box up in $(( $(date +%s) - start ))s"
    require="$require,$box"
done
export NRUN_REQUIRE="${NRUN_REQUIRE:-$require}"
echo "--- pytest (NRUN_REQUIRE=$NRUN_REQUIRE)"
exec python -m pytest -p no:cacheprovider -ra "$@"
