"""``env`` provider: ``AFTD_SECRET_<NAME>`` environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from aftd.secrets.base import DEFAULT_FIELD, SecretName

__all__ = ["ENV_PREFIX", "EnvProvider", "env_var_name"]

ENV_PREFIX = "AFTD_SECRET_"
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


def env_var_name(name: SecretName | str) -> str:
    """``orch-api-token`` -> ``AFTD_SECRET_ORCH_API_TOKEN``; ``db#user`` -> ``AFTD_SECRET_DB_USER``.

    The default field ``value`` maps to the bare name.
    """
    text = str(name)
    if text.endswith("#" + DEFAULT_FIELD):
        text = text[: -len(DEFAULT_FIELD) - 1]
    return ENV_PREFIX + _NON_ALNUM.sub("_", text).upper()


class EnvProvider:
    """Reads the process environment at every lookup, so a changed variable is seen at once
    (after the chain's cache TTL). An empty variable counts as unset."""

    name = "env"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def __repr__(self) -> str:
        return "EnvProvider()"

    def where(self, name: SecretName) -> str:
        return env_var_name(name)

    async def lookup(self, name: SecretName) -> str | None:
        return self._environ.get(env_var_name(name)) or None

    async def aclose(self) -> None:
        return None
