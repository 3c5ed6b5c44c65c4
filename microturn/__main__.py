"""``python -m microturn``: the same as the ``microturn`` command."""

import sys

from microturn.cli import main

sys.exit(main())
