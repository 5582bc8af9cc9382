"""The async store interface in one place: what the runner, the API and the outbox need from
persistent state, whatever holds it (SQLite for one host, PostgreSQL for a fleet).

The protocols are defined beside their users (:mod:`aftd.jobs.storage`,
:mod:`aftd.report.storage`), so the layers below this package never import it; this module
gathers them with the fleet's own parts (the host lease, :mod:`aftd.store.pg.lease`).
"""

from __future__ import annotations

from aftd.jobs.storage import STORE_ERRORS, CancelRequest, JobClaims, JobStorage
from aftd.report.storage import OutboxStorage

__all__ = ["STORE_ERRORS", "CancelRequest", "JobClaims", "JobStorage", "OutboxStorage"]
