"""``python -m ortgen`` is ``ortgen``."""

import sys

from ortgen.cli import main

sys.exit(main())
