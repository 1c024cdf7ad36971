"""The result file a point leaves in its job dir, read back by the launcher, `nrun status`, resume.

Written by the point runtime (``point.write_result``: status, pickled value and repr, error and
traceback, and the point's identity). A result is only ever read for the point it belongs to:
``read_result(path, expect=identity)`` ignores a file another sweep or point left.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from nrun_core.runtime.point import COMPLETED, FAILED, identity, write_result

__all__ = ["COMPLETED", "FAILED", "identity", "read_result", "write_result"]


def read_result(path: "str | os.PathLike[str]", expect: Optional[Dict[str, Any]] = None) -> Optional[dict]:
    """The record, with ``value`` unpickled where possible; None if the point left none (or
    the file belongs to another point than ``expect``)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or (expect is not None and record.get("identity") != expect):
        return None
    if "pickle" in record:
        # Values of classes defined in the app's main module come pickled as __mp_main__.X from
        # points run by the point runtime (it loads the app as multiprocessing does).
        if "__main__" in sys.modules:
            sys.modules.setdefault("__mp_main__", sys.modules["__main__"])
        try:
            record["value"] = pickle.loads(base64.b64decode(record["pickle"]))
        except Exception as exc:
            record["value"] = record.get("repr")
            record["unpickle_error"] = f"{type(exc).__name__}: {exc}"
    return record
