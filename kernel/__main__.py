"""``python -m kernel run MODULE:ATTR``: the application runner.

The runner boots a root supervisor, which lives a layer above the kernel, so this entry point hands
over to ``tools.run`` by name: the one explicit seam where the kernel reaches upward, kept out of the
import graph so that ``kernel`` itself still imports nothing of ours.
"""

from __future__ import annotations

import importlib
import sys


def main() -> int:
    runner = importlib.import_module("tools.run")
    code: int = runner.main(sys.argv[1:])
    return code


if __name__ == "__main__":
    sys.exit(main())
