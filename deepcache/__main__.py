"""Entry point of ``python -m deepcache`` (the standalone benchmark)."""
import sys

from .benchmark import main

sys.exit(main())
