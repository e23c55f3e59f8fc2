"""Entry point of ``python -m tools.bench`` (``make bench``)."""

import sys

from tools.bench.runner import main

sys.exit(main())
