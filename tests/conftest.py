"""Shared test set-up.

TRITON_INTERPRET must be set before anything imports triton, so it is set here, at the very top of the
root conftest, which pytest loads before any test module.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
