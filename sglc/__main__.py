"""``python -m sglc ...`` — the same as the ``sglc`` command."""
from __future__ import annotations

import sys

from sglc.cli import main

if __name__ == "__main__":
    sys.exit(main())
