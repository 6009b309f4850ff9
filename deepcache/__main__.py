"""Entry point of ``python -m deepcache``: the standalone benchmark, or with ``--sweep`` the drift-per-cost
harness."""
import sys

if "--sweep" in sys.argv[1:]:
    from .sweep import main
else:
    from .benchmark import main

sys.exit(main())
