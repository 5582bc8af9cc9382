"""``[vfs]`` config validation and the registry/pool contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aftd.configmodel import Section
from aftd.errors import ConfigError, TransferError
from aftd.vfs.base import UnknownVfsError
from aftd.vfs.config import parse_vfs_section
from aftd.vfs.registry import BACKENDS, Backend, VfsPool, load_backend
from aftd.vfs.sftp_config import DEFAULT_CIPHERS
from tests.vfs.conftest import DictSecrets

SFTP = {"type": "sftp", "host": "h", "user": "u", "key_secret": "k", "known_hosts": "/kh"}


def parse(entries: dict[str, Any]) -> dict[str, Any]:
    return parse_vfs_section(Section(entries, "aftd.toml", "vfs"))


def test_sftp_defaults() -> None:
    cfg = parse({"p": SFTP})["p"]
    o = cfg.options
    assert (cfg.type, cfg.root, o["port"], o["max_connections"], o["block_size"]) == (
        "sftp", "", 22, 4, 261_120)
    assert o["ciphers"] == DEFAULT_CIPHERS
    assert o["ciphers"][0] == "aes128-gcm@openssh.com"


@pytest.mark.parametrize(("entry", "key", "reason"), [
    ({"type": "nfs"}, "vfs.p.type", "must be one of"),
    ({"root": "/x"}, "vfs.p.type", "is required"),
    ({"type": "local"}, "vfs.p.root", "is required"),
    ({"type": "local", "root": "rel"}, "vfs.p.root", "absolute"),
    ({"type": "local", "root": "/x", "bogus": 1}, "vfs.p.bogus", "unknown key"),
    ({**SFTP, "host": ""}, "vfs.p.host", "must not be empty"),
    ({**SFTP, "port": 0}, "vfs.p.port", ">= 1"),
    ({**SFTP, "key_secret": ""}, "vfs.p.key_secret", "exactly one of key_secret or password"),
    ({**SFTP, "password_secret": "pw"}, "vfs.p.key_secret", "exactly one"),
    ({**SFTP, "known_hosts": ""}, "vfs.p.known_hosts", "exactly one of known_hosts or host_key"),
    ({**SFTP, "known_hosts": "", "host_key_sha256": "abc"}, "vfs.p.host_key_sha256", "SHA256:"),
    ({**SFTP, "block_size": 262_144}, "vfs.p.block_size", "<= 261120"),
    ({**SFTP, "ciphers": []}, "vfs.p.ciphers", "must not be empty"),
    ({**SFTP, "key_secret": "", "password_secret": "p", "passphrase_secret": "x"},
     "vfs.p.passphrase_secret", "only makes sense"),
    ({**SFTP, "insecure": True}, "vfs.p.insecure", "unknown key"),
])
def test_bad_entries_name_the_key(entry: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse({"p": entry})
    assert ei.value.key == key
    assert reason in ei.value.reason
    assert ei.value.file == "aftd.toml"


def test_unknown_vfs_lists_configured(tmp_path: Path) -> None:
    pool = VfsPool(parse({"b": {"type": "local", "root": str(tmp_path)},
                          "a": {"type": "local", "root": str(tmp_path)}}), DictSecrets({}))
    with pytest.raises(UnknownVfsError, match=r"unknown VFS 'zz'; configured: a, b"):
        pool.get("zz")
    assert issubclass(UnknownVfsError, TransferError)
    assert pool.get("a") is pool.get("a")  # one object per name, shared by jobs
    assert pool.get("a").name == "a"


def test_missing_backend_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "s3", Backend("aftd.vfs.no_such_backend", "aiobotocore"))
    with pytest.raises(TransferError, match=r"package 'aiobotocore' \(pip install"):
        load_backend("s3")
    with pytest.raises(TransferError, match="unknown VFS type 'nfs'"):
        load_backend("nfs")


def test_repr_holds_no_secret_names_or_values(tmp_path: Path) -> None:
    pool = VfsPool(parse({"p": SFTP}), DictSecrets({"k": "TOPSECRET"}))
    assert "TOPSECRET" not in repr(pool.get("p"))
