"""The errors a store raises when it cannot do its work, whatever the database behind it
(defined in :mod:`aftd.errors`, which every layer may import)."""

from __future__ import annotations

import sqlite3

from aftd.errors import StoreError, StoreUnavailable

__all__ = ["STORE_ERRORS", "SchemaMismatch", "StoreError", "StoreUnavailable"]


class SchemaMismatch(StoreError):
    """The database's schema version is not the one this aftd knows; the message says what to
    run."""


# What a caller catches to retry later: either backend's failures.
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
