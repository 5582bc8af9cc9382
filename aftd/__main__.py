"""``python -m aftd ...`` is ``aftd ...`` (works before console scripts are on PATH)."""

from __future__ import annotations

import sys

from aftd.cli.aftd_main import main

sys.exit(main())
