"""``python -m aftd.cli ...`` is ``aft ...`` (works before console scripts are on PATH)."""

from __future__ import annotations

import sys

from aftd.cli.aft_main import main

sys.exit(main())
