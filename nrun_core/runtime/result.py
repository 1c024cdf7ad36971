"""The result file a point leaves in its job dir: status, return value, error, for the launcher.

The value travels pickled (base64 inside JSON, so the file stays readable by `nrun show`) with a
repr beside it: a launcher whose Python cannot unpickle it still shows what it was.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import time
import traceback
from pathlib import Path
from typing import Any, Optional

COMPLETED = "COMPLETED"
FAILED = "FAILED"


def write_result(path: str | os.PathLike, *, status: str, value: Any = None,
                 error: Optional[BaseException] = None) -> None:
    """Atomically write the result (rename), so a reader never sees half a file."""
    record: dict = {"status": status, "time": time.time(), "pid": os.getpid()}
    if status == COMPLETED:
        record["repr"] = _short_repr(value)
        try:
            record["pickle"] = base64.b64encode(pickle.dumps(value, protocol=4)).decode()
        except Exception as exc:  # unpicklable values still report their repr
            record["pickle_error"] = f"{type(exc).__name__}: {exc}"
    else:
        assert error is not None
        record["error_type"] = type(error).__name__
        record["error"] = str(error)
        record["traceback"] = "".join(
            traceback.format_exception(type(error), error, error.__traceback__))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, target)


def read_result(path: str | os.PathLike) -> Optional[dict]:
    """The record, with ``value`` unpickled where possible; None if the point left none."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    if "pickle" in record:
        try:
            record["value"] = pickle.loads(base64.b64decode(record["pickle"]))
        except Exception as exc:
            record["value"] = record.get("repr")
            record["unpickle_error"] = f"{type(exc).__name__}: {exc}"
    return record


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
