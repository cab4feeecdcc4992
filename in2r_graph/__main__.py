"""Allow ``python -m in2r_graph``."""

import sys

from .cli.main import main

sys.exit(main())
