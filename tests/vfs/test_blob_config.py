"""``type = "azure"`` and ``type = "gcs"`` entries (and what they share with ``"s3"``): defaults,
and errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from aftd.configmodel import Section
from aftd.errors import ConfigError, TransferError
from aftd.vfs.azure_config import account_name_of
from aftd.vfs.config import parse_vfs_section
from aftd.vfs.registry import BACKENDS, Backend, load_backend

AZURE = {"type": "azure", "account_url": "https://acct.blob.core.windows.net",
         "container": "drops", "account_key_secret": "blob-key"}
GCS = {"type": "gcs", "bucket": "exports", "credentials_secret": "gcs-sa-json"}
S3 = {"type": "s3", "bucket": "landing", "access_key_secret": "ak", "secret_key_secret": "sk"}


def parse(entry: dict[str, Any]) -> Any:
    return parse_vfs_section(Section({"b": entry}, "aftd.toml", "vfs"))["b"]


def test_azure_defaults_and_prefix_normalised() -> None:
    cfg = parse({**AZURE, "prefix": "/inbound/x"})
    o = cfg.options
    assert (o["prefix"], o["block_size_mib"], o["max_blocks_in_flight"], o["checksum"]) == (
        "inbound/x/", 8, 4, True)
    assert parse(AZURE).options["prefix"] == ""


def test_gcs_defaults() -> None:
    o = parse(GCS).options
    assert (o["endpoint"], o["prefix"], o["chunk_size_mib"], o["retries"]) == ("", "", 16, 3)
    assert parse({**GCS, "credentials_secret": ""}).options["credentials_secret"] == ""


@pytest.mark.parametrize(("entry", "key", "reason"), [
    ({**AZURE, "account_key_secret": ""}, "vfs.b.account_key_secret", "exactly one of"),
    ({**AZURE, "sas_secret": "s"}, "vfs.b.sas_secret", "exactly one of"),
    ({**AZURE, "account_url": ""}, "vfs.b.account_url", "is required"),
    ({**AZURE, "account_url": "ftp://x"}, "vfs.b.account_url", "http(s) URL"),
    ({**AZURE, "account_url": "https://acct.blob.core.windows.net/?sv=1&sig=2"},
     "vfs.b.account_url", "sas_secret"),
    ({**AZURE, "account_url": "https://example.com"}, "vfs.b.account_url", "names no account"),
    ({**AZURE, "container": "Drops"}, "vfs.b.container", "naming rules"),
    ({**AZURE, "container": "ab"}, "vfs.b.container", "naming rules"),
    ({**AZURE, "prefix": "a/../b"}, "vfs.b.prefix", "'..'"),
    ({**AZURE, "prefix": "a\\b"}, "vfs.b.prefix", "backslash"),
    ({**AZURE, "root": "/x"}, "vfs.b.root", "use prefix"),
    ({**AZURE, "block_size_mib": 0}, "vfs.b.block_size_mib", ">= 1"),
    ({**AZURE, "key": "x"}, "vfs.b.key", "unknown key"),
    ({**GCS, "bucket": "Exports"}, "vfs.b.bucket", "naming rules"),
    ({**GCS, "bucket": ""}, "vfs.b.bucket", "must not be empty"),
    ({**GCS, "endpoint": "127.0.0.1:4443"}, "vfs.b.endpoint", "http(s) URL"),
    ({**GCS, "endpoint": "http://127.0.0.1:4443/storage/v1"}, "vfs.b.endpoint", "without a path"),
    ({**GCS, "prefix": "%2e%2e/x"}, "vfs.b.prefix", "percent-encoded"),
    ({**GCS, "chunk_size_mib": 2048}, "vfs.b.chunk_size_mib", "<= 1024"),
    ({**GCS, "root": "/x"}, "vfs.b.root", "use prefix"),
])
def test_bad_entries_name_the_key(entry: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(entry)
    assert ei.value.key == key
    assert reason in ei.value.reason
    assert ei.value.file == "aftd.toml"


@pytest.mark.parametrize("entry", [S3, AZURE, GCS], ids=["s3", "azure", "gcs"])
def test_object_stores_share_the_root_and_prefix_rules(entry: dict[str, Any]) -> None:
    # One base model gives all three the same answers: an empty root is accepted but not
    # offered by the schema, any other root is refused with one reason, the prefix is
    # normalised and confined alike.
    cfg = parse({**entry, "root": "", "prefix": "/in/x"})
    assert cfg.options["prefix"] == "in/x/"
    props = type(cfg).model_json_schema()["properties"]
    assert "prefix" in props and "root" not in props
    with pytest.raises(ConfigError) as ei:
        parse({**entry, "root": "/x"})
    assert (ei.value.key, ei.value.reason) == (
        "vfs.b.root", "an object store has no root directory: use prefix")
    with pytest.raises(ConfigError) as ei:
        parse({**entry, "prefix": "in/../../up"})
    assert (ei.value.key, ei.value.reason) == (
        "vfs.b.prefix", "empty, '.' and '..' components are not allowed")


def test_connection_string_needs_no_account_url() -> None:
    cfg = parse({"type": "azure", "container": "drops", "connection_string_secret": "cs"})
    assert cfg.options["account_url"] == ""


@pytest.mark.parametrize(("url", "account"), [
    ("https://acct.blob.core.windows.net", "acct"),
    ("https://acct.blob.core.chinacloudapi.cn/", "acct"),
    ("http://127.0.0.1:10000/devstoreaccount1", "devstoreaccount1"),
    ("http://azurite:10000/devstoreaccount1/", "devstoreaccount1"),
    ("https://example.com", None),
])
def test_account_name_from_url(url: str, account: str | None) -> None:
    assert account_name_of(url) == account


@pytest.mark.parametrize(("vtype", "extra", "package"), [("azure", "azure", "azure-storage-blob"),
                                                         ("gcs", "gcs", "PyJWT")])
def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, vtype: str,
                                         extra: str, package: str) -> None:
    real = BACKENDS[vtype]
    assert (real.install, real.package) == (f"'aftd[{extra}]'", package)
    monkeypatch.setitem(BACKENDS, vtype, Backend("aftd.vfs.no_such_module", package,
                                                 needs_secrets=True,
                                                 install=f"'aftd[{extra}]'"))
    with pytest.raises(TransferError, match=rf"package '{package}' \(pip install 'aftd\[{extra}\]'"):
        load_backend(vtype)
