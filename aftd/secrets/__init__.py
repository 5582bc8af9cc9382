"""Secret resolution: the provider chain (vault, file, env), caching and redaction.

Entry points: :class:`aftd.secrets.chain.SecretChain` (``get``/``which``/``start``/``aclose``)
built from :class:`aftd.secrets.config.SecretsConfig`; ``aftd.secrets.cli.run_check`` for
``aftd secrets check``. Submodules are imported lazily so that importing the config does not
import hvac.
"""
