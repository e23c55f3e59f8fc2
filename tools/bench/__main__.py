"""Entry point of ``python -m tools.bench`` (``make bench``); ``python -m tools.bench cluster [...]`` runs
the cluster rows instead (``tools.bench.cluster_nodes``: they need PostgreSQL and nodes of their own)."""

import sys

if sys.argv[1:2] == ["cluster"]:
    from tools.bench.cluster_nodes import main as cluster_main

    sys.exit(cluster_main(sys.argv[2:]))

from tools.bench.runner import main

sys.exit(main())
