"""The upstream Kubeflow Trainer and KubeRay CRDs, adapted to what a v1.20 kube-apiserver accepts.

The CRDs are data kept outside the project (``$NRUN_K8S_CRDS``, default /work/shared/k8s-crds);
they are read, never copied. As shipped they do not load on 1.20 (CLOUD-FACTS section 4):
``x-kubernetes-validations`` (CEL, 1.25+) is unknown, ``default: ""`` is rejected as "null", and
list-map keys need defaults 1.20 cannot see. ``adapt_for_120`` removes the first two and turns map
lists into atomic lists; every other part of the schema (types, enums, required, defaults other
than "") stays, so the apiserver still refuses a wrong-typed field with a 422.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

from nrun_core.errors import SandboxError

DEFAULT_DIR = "/work/shared/k8s-crds"
FILES = ("trainjobs.yaml", "clustertrainingruntimes.yaml", "rayjobs.yaml", "rayclusters.yaml")
# The annotation recording which upstream file (by content hash) a loaded CRD came from.
SOURCE_ANNOTATION = "nrun.dev/crd-source-sha256"


def crd_dir() -> Path:
    return Path(os.environ.get("NRUN_K8S_CRDS") or DEFAULT_DIR)


def crd_files() -> List[Path]:
    """The upstream CRD files, or a SandboxError naming the setting when they are not there."""
    root = crd_dir()
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise SandboxError(f"the upstream CRDs {', '.join(missing)} are not in {root}. Fix: set "
                           "NRUN_K8S_CRDS to the directory holding the Kubeflow Trainer "
                           f"({FILES[0]}, {FILES[1]}) and KubeRay ({FILES[2]}, {FILES[3]}) CRDs.")
    return [root / f for f in FILES]


def load_yaml(path: Path) -> Dict[str, Any]:
    """One CRD document (the C loader: these files are megabytes)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as fh:
        return yaml.load(fh, Loader=loader)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapt_for_120(node: Any, counts: Dict[str, int] | None = None) -> Any:
    """A copy of NODE without what 1.20 refuses (see the module docstring); COUNTS tallies it."""
    counts = counts if counts is not None else {}
    if isinstance(node, list):
        return [adapt_for_120(item, counts) for item in node]
    if not isinstance(node, dict):
        return node
    out: Dict[str, Any] = {}
    for key, value in node.items():
        if key == "x-kubernetes-validations":
            counts["cel_rules"] = counts.get("cel_rules", 0) + 1
            continue
        if key == "default" and value == "":
            counts["empty_defaults"] = counts.get("empty_defaults", 0) + 1
            continue
        if key == "x-kubernetes-list-map-keys":
            continue
        if key == "x-kubernetes-list-type" and value == "map":
            counts["map_lists"] = counts.get("map_lists", 0) + 1
            out[key] = "atomic"
            continue
        out[key] = adapt_for_120(value, counts)
    return out


def adapted(path: Path) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """The CRD in PATH ready for a v1.20 apiserver, annotated with its source hash, and the
    tally of what was changed."""
    counts: Dict[str, int] = {}
    crd = adapt_for_120(load_yaml(path), counts)
    meta = crd.setdefault("metadata", {})
    meta.pop("creationTimestamp", None)
    meta.setdefault("annotations", {})[SOURCE_ANNOTATION] = file_digest(path)
    crd.pop("status", None)
    return crd, counts


def schema_of(kind_file: str, version: str) -> Dict[str, Any]:
    """The UNMODIFIED openAPIV3Schema of one CRD version, for offline validation."""
    crd = load_yaml(crd_dir() / kind_file)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise SandboxError(f"{kind_file} in {crd_dir()} has no version {version}")
