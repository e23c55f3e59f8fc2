"""``python -m kernel run MODULE:ATTR``: the application runner (also installed as ``pyotp-run``).

The runner boots a root supervisor, which lives a layer above the kernel, so this entry point hands
over to the runner in ``tools/run.py``: the one explicit seam where the kernel reaches upward, kept out
of the import graph so that ``kernel`` itself still imports nothing of ours.

The seam goes by path, not by name: under ``python -m`` the current directory leads ``sys.path``, so a
project with its own ``tools/`` package would otherwise shadow ours (``No module named 'tools.run'``).
The runner is loaded from the ``tools`` directory installed beside this package and registered as
``tools.run`` only, leaving the name ``tools`` itself to the user's project.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The runner's module name; it defines nothing that travels to workers, so it need not be importable there.
RUNNER = "tools.run"


def runner_path() -> Path:
    """Where this distribution's runner is: ``tools/run.py`` beside the ``kernel`` package."""
    return Path(__file__).resolve().parent.parent / "tools" / "run.py"


def load_runner() -> ModuleType:
    """Our ``tools.run``, whatever ``tools`` package the current directory or ``sys.path`` holds."""
    path = runner_path()
    loaded = sys.modules.get(RUNNER)
    if loaded is not None and Path(getattr(loaded, "__file__", None) or "").resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location(RUNNER, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ModuleNotFoundError(f"the runner is missing from this installation: {path} "
                                  "(reinstall pyotp-kernel)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[RUNNER] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[RUNNER]
        raise
    return module


def main() -> int:
    code: int = load_runner().main(sys.argv[1:])
    return code


if __name__ == "__main__":
    sys.exit(main())
