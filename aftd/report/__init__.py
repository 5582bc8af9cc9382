"""Reports to an orchestrator: claim parsing, the durable outbox and the workflow helper.

``aftd.report.workflow`` is imported on demand (it needs the script layer); the outbox and the
claim parser have no such dependency.
"""

from __future__ import annotations

from aftd.report.claim import Claim, ClaimError, parse_claim
from aftd.report.outbox import Outbox

__all__ = ["Claim", "ClaimError", "Outbox", "parse_claim"]
