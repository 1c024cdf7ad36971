"""What one custom resource (TrainJob, RayJob...) brings to the shared Kubernetes executor and its
control: the resource, its option's name, the operator that serves it, its own option checks, the
point's object and how the object's status reads. Everything else is ``executors.k8s``'s, once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

from nrun_core.executors.k8s.api import Kind


@dataclass(frozen=True)
class Resource:
    kind: Kind
    option: str                                   # hydra/launcher=<option>, for messages
    operator: str                                 # what installs the CRD, for the "not installed" message
    check_options: Callable[[Any], None]          # (opts): ConfigError for a bad resource option
    manifest: Callable[..., Dict[str, Any]]       # (opts, spec, attempt): the point's object, as created
    state_of: Callable[[Dict[str, Any]], Any]     # (object): cloudjob.polled.RemoteState
