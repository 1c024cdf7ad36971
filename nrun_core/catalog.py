"""What this install offers, for help texts: executors, packagers, launchers, sandboxes.

Read from the registries themselves (nrun_core.registry, nrun_core.sandbox.SANDBOXES, the YAML
groups under conf/nrun/), so a new one shows up in `nrun --help` without editing any help text.
Cheap: no backend module is imported, plugins are listed by entry-point name without loading them.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Dict, List


def executors() -> List[str]:
    """`hydra/launcher=` options: the built-in ones, then plugins' (entry points, not loaded)."""
    from nrun_core import registry

    names = [e.option for e in registry.BUILTIN]
    try:
        from importlib.metadata import entry_points

        names += sorted(ep.name for ep in entry_points(group=registry.GROUP) if ep.name not in names)
    except Exception:  # a broken distribution must not break --help
        pass
    return names


def sandboxes() -> List[str]:
    from nrun_core.sandbox import SANDBOXES

    return sorted(SANDBOXES)


def conf_dir() -> str:
    """nrun's YAML groups: `nrun_conf/` of an installed wheel, `conf/` of a source checkout
    (where the Hydra plugin's search path finds them too)."""
    spec = importlib.util.find_spec("nrun_conf")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def group(name: str) -> List[str]:
    """Options of the YAML group `nrun/<name>` (packager, launcher)."""
    try:
        files = os.listdir(os.path.join(conf_dir(), "nrun", name))
    except OSError:
        return []
    return sorted(f[: -len(".yaml")] for f in files if f.endswith(".yaml") and not f.startswith("_"))


def everything() -> Dict[str, List[str]]:
    return {"executors": executors(), "packagers": group("packager"), "launchers": group("launcher"),
            "sandboxes": sandboxes()}


def help_text(width: int = 0) -> str:
    """The epilog of `nrun --help`: what can be chosen here, and how, wrapped to the terminal."""
    import shutil
    import textwrap

    width = width or max(60, min(120, shutil.get_terminal_size((100, 24)).columns))
    have = everything()
    rows = [("executors", "hydra/launcher=NAME", have["executors"]),
            ("packagers", "nrun/packager=NAME", have["packagers"]),
            ("launchers", "nrun/launcher=NAME", have["launchers"]),
            ("sandboxes", "nrun sandbox NAME up", have["sandboxes"])]
    pad = 2 + max(len(a) + len(b) for a, b, _ in rows) + 4
    lines = ["available here:"]
    for label, how, names in rows:
        head = f"  {label}  {how}".ljust(pad)
        lines.append(textwrap.fill(", ".join(names) or "(none found)", width=width, initial_indent=head,
                                   subsequent_indent=" " * pad, break_on_hyphens=False))
    lines.append('shell completion: eval "$(nrun completion bash)" (or zsh, fish) in your shell\'s rc file')
    return "\n".join(lines) + "\n"
