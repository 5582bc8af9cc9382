"""[secrets] parsing: defaults, provider tables, errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aftd.configmodel import Section
from aftd.errors import ConfigError
from aftd.secrets.config import parse_secrets_section


def parse(data: dict[str, Any]) -> Any:
    return parse_secrets_section(Section(data, "/etc/aftd/aftd.toml", "secrets"))


def test_defaults_without_tables() -> None:
    cfg = parse({})
    assert cfg.order == ("env",)
    assert cfg.cache_ttl_s == 30.0
    assert (cfg.mask_ttl_s, cfg.mask_max_values) == (86400.0, 4096)
    assert cfg.vault is None
    assert cfg.file is None


def test_default_order_follows_configured_tables() -> None:
    cfg = parse({"vault": {"url": "https://127.0.0.1:8200"}, "file": {"path": "s.toml"}})
    assert cfg.order == ("vault", "file", "env")
    assert cfg.file is not None
    assert cfg.file.path == Path("/etc/aftd/s.toml")  # relative to the config file
    assert cfg.vault is not None
    assert (cfg.vault.mount, cfg.vault.prefix, cfg.vault.auth) == ("secret", "aftd/", "token")


def test_full_vault_table() -> None:
    cfg = parse({"vault": {
        "url": "https://vault:8200/", "auth": "approle", "role_id_file": "/r",
        "secret_id_file": "/s", "mount": "kv", "prefix": "team/", "namespace": "ns1",
        "ca_file": "/ca.pem", "client_cert": "/c.pem", "client_key": "/k.pem",
        "timeout_s": 5, "renew": False, "renew_fraction": 0.5, "renew_increment_s": 3600,
    }})
    v = cfg.vault
    assert v is not None
    assert v.url == "https://vault:8200"
    assert v.role_id_file == Path("/r")
    assert (v.mount, v.prefix, v.namespace, v.renew, v.renew_fraction) == \
        ("kv", "team/", "ns1", False, 0.5)


@pytest.mark.parametrize(("data", "key", "reason"), [
    ({"vault": {"url": "x", "bogus": 1}}, "secrets.vault.url", "http"),
    ({"vault": {"url": "http://v", "bogus": 1}}, "secrets.vault.bogus", "unknown key"),
    ({"file": {"path": "/x", "mode": 1}}, "secrets.file.mode", "unknown key"),
    ({"extra": 1}, "secrets.extra", "unknown key"),
    ({"vault": {}}, "secrets.vault.url", "required"),
    ({"file": {}}, "secrets.file.path", "required"),
    ({"vault": {"url": "http://v", "auth": "approle", "role_id_file": "/r"}},
     "secrets.vault.secret_id_file", "approle"),
    ({"vault": {"url": "http://v", "auth": "ldap"}}, "secrets.vault.auth", "token, approle"),
    ({"vault": {"url": "http://v", "client_cert": "/c"}}, "secrets.vault.client_key",
     "together"),
    ({"vault": {"url": "http://v", "prefix": "../x/"}}, "secrets.vault.prefix", ".."),
    ({"order": ["vault"]}, "secrets.order[0]", "[secrets.vault]"),
    ({"order": ["env", "s3"]}, "secrets.order[1]", "unknown provider"),
    ({"order": ["env", "env"]}, "secrets.order[1]", "twice"),
    ({"cache_ttl_s": -1}, "secrets.cache_ttl_s", ">= 0"),
    ({"mask_ttl_s": 10}, "secrets.mask_ttl_s", ">= 60"),
    ({"cache_ttl_s": 600, "mask_ttl_s": 300}, "secrets.mask_ttl_s", "at least cache_ttl_s"),
    ({"mask_max_values": 0}, "secrets.mask_max_values", ">= 16"),
])
def test_errors_name_the_key(data: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert info.value.key == key
    assert reason in info.value.reason
