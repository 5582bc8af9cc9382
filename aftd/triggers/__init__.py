"""Triggers: schedules and folder watchers that start jobs by themselves.

Each ``[[triggers]]`` entry is a schedule (5-field cron or ``every_s``, in an IANA time zone) or a
watch (a directory of any VFS: inotify for a local one, polling otherwise). A trigger submits
jobs through the runner exactly as ``POST /v1/jobs`` does, and claims each fire in the store
before it submits it, so a due time or a file version fires once, across restarts, crashes and
reloads (README, "Triggers"). This package's ``__init__`` imports nothing: the config models
(:mod:`aftd.triggers.config`) load without the runtime's dependencies.
"""

__all__: list[str] = []
