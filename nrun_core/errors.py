"""One exception family, so users (and tests) can tell nrun's own errors from their task's.

Every message names the setting at fault and how to fix it; backend errors keep the backend's own
text and add which point and which request they came from.
"""

from __future__ import annotations


class NrunError(Exception):
    """Base of every error nrun raises on purpose."""


class ConfigError(NrunError):
    """A setting is wrong; raised before anything is submitted."""


class PackagingError(NrunError):
    """The code could not be packaged (dirty tree refused, bad pattern, unsafe archive, ...)."""


class BackendError(NrunError):
    """The backend refused or failed a request; the message keeps the backend's own words."""


class SandboxError(NrunError):
    """A local sandbox (slurm, docker, ssh) could not be brought up or down."""


class PointFailed(NrunError):
    """A sweep point ended in failure; carries the point's own error text and log paths."""


class StoreError(NrunError):
    """The job store (NRUN_HOME/nrun.db) is missing, corrupt, locked or on a full disk too long."""
