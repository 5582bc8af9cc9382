"""The declarative config core: error locations and reasons, type registries, paths, reprs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BeforeValidator, ValidationError

from aftd.config import load_config
from aftd.configmodel import Section, TypeRegistry, inject_names, validate
from aftd.errors import ConfigError
from aftd.serverconfig import ServerConfig
from aftd.vfs.config import VFS_TYPES, VfsConfig, parse_vfs_section, vfs_tables
from tests.core.config_types import Root

SFTP = {"type": "sftp", "host": "h", "user": "u", "key_secret": "k", "known_hosts": "/kh"}


def _error(tmp_path: Path, text: str) -> ConfigError:
    p = tmp_path / "aftd.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    return err.value


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("server = 5\n", "server", "must be a table, got int"),
    ("[server]\ntls_cert = 5\ntls_key = \"k\"\n", "server.tls_cert", "must be a string, got int"),
    ("[server]\nport = 44399\n", "server.port", "unknown key"),
    ("[jobs]\nshutdown_grace_s = true\n", "jobs.shutdown_grace_s",
     "must be a number, got a boolean"),
    ("[jobs]\nmax_concurrent = \"5\"\n", "jobs.max_concurrent", "must be an integer, got str"),
    ("[metrics]\nopen = 1\n", "metrics.open", "must be true or false, got int"),
    ("auth = { api_keys = 5 }\n", "auth.api_keys", "must be an array of tables ([[...]]), got int"),
    ("[[auth.api_keys]]\nname = \"a\"\nsha256 = \"{}\"\n[[auth.api_keys]]\nname = \"a\"\n"
     "sha256 = \"{}\"\n".format("a" * 64, "b" * 64), "auth.api_keys[1].name",
     "duplicate API key name 'a'"),
    ("[[auth.api_keys]]\nname = \"a\"\nsha256 = \"%s\"\nallow_from = [1]\n" % ("a" * 64),
     "auth.api_keys[0].allow_from[0]", "must be a string, got int"),
    ("[secrets]\norder = \"env\"\n", "secrets.order", "must be a list of strings, got str"),
    ("[vfs.p]\ntype = \"sftp\"\nhost = \"h\"\nuser = \"u\"\nkey_secret = \"k\"\n"
     "known_hosts = \"/kh\"\nciphers = [\"aes128-ctr\", 5]\n", "vfs.p.ciphers[1]",
     "must be a string, got int"),
    ("[vfs.p]\ntype = 5\n", "vfs.p.type", "must be a string, got int"),
    ("[vfs.p]\ntype = \"local\"\nroot = \"/x\"\nname = \"q\"\n", "vfs.p.name",
     "unknown key (a table's name is its key)"),
    ("vfs = { p = 5 }\n", "vfs.p", "must be a table, got int"),
    ("[vfs.sftp]\ntype = \"sftp\"\nhost = \"h\"\nuser = \"u\"\nkey_secret = \"k\"\n"
     "known_hosts = \"/kh\"\nport = 70000\n", "vfs.sftp.port", "must be <= 65535, got 70000"),
])
def test_reasons_in_our_words(tmp_path: Path, text: str, key: str, reason: str) -> None:
    err = _error(tmp_path, text)
    assert (err.key, err.reason) == (key, reason)
    assert str(err) == f"{tmp_path / 'aftd.toml'}: {key}: {reason}"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "aftd.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(("data", "key", "reason"), [
    ([{"name": "a", "type": "schedule", "script": "s", "every_s": 5},
      {"name": "b", "type": "watch", "script": "s", "vfs": "in"},
      {"name": "c", "type": "schedule", "script": "s"}],
     "triggers[2].cron", "exactly one of cron or every_s is required"),
    ([{"name": "a", "type": "cron", "script": "s"}], "triggers[0].type",
     "must be one of schedule, watch; got 'cron'"),
    ([{"name": "a", "script": "s"}], "triggers[0].type", "is required (one of schedule, watch)"),
    ([{"name": "a", "type": "watch", "script": "s", "vfs": "in", "poll": 5}], "triggers[0].poll",
     "unknown key"),
    ([{"name": "a", "type": "watch", "script": "s", "vfs": "in", "ignore": ["x", 1]}],
     "triggers[0].ignore[1]", "must be a string, got int"),
    ([{"name": "", "type": "watch", "script": "s", "vfs": "in"}], "triggers[0].name",
     "must not be empty"),
])
def test_a_new_registry_of_table_types_reports_like_the_rest(
        data: list[dict[str, Any]], key: str, reason: str) -> None:
    """[[triggers]] as a later module will add it: errors name the array index and the key."""
    with pytest.raises(ConfigError) as err:
        validate(Root, {"triggers": data}, file="aftd.toml")
    assert (err.value.key, err.value.reason) == (key, reason)


def test_valid_triggers_become_their_types() -> None:
    root = validate(Root, {"triggers": [
        {"name": "n", "type": "schedule", "script": "s", "cron": "0 2 * * *",
         "params": {"region": "eu"}},
        {"name": "w", "type": "watch", "script": "s", "vfs": "in", "ignore": ["*.part"]}]},
        file="aftd.toml")
    assert [type(t).__name__ for t in root.triggers] == ["ScheduleTrigger", "WatchTrigger"]
    assert root.triggers[0].params == {"region": "eu"}
    assert root.triggers[1].ignore == ("*.part",)


def test_a_new_vfs_type_is_one_module_and_one_registry_line() -> None:
    registry = TypeRegistry("vfs", {**{n: f"{VFS_TYPES.model(n).__module__}:"
                                        f"{VFS_TYPES.model(n).__name__}" for n in VFS_TYPES.names},
                                    "s3": "tests.core.config_types:S3Config"})
    entries = Annotated[dict[str, Annotated[VfsConfig, registry]], BeforeValidator(inject_names)]
    sec = Section({"lake": {"type": "s3", "prefix": "in/"}, "p": SFTP}, "aftd.toml", "vfs")
    with pytest.raises(ConfigError) as err:
        sec.validate(entries)
    assert (err.value.key, err.value.reason) == ("vfs.lake.bucket", "is required")
    sec = Section({"lake": {"type": "s3", "bucket": "b", "addressing": "path"}}, "f", "vfs")
    lake = sec.validate(entries)["lake"]
    assert (lake.name, lake.bucket, lake.options["part_size_mib"]) == ("lake", "b", 16)
    known = ", ".join(registry.names)
    with pytest.raises(ConfigError, match=rf"f: vfs.lake.type: must be one of {known}; got .nfs.$"):
        Section({"lake": {"type": "nfs"}}, "f", "vfs").validate(entries)


def test_backend_config_modules_import_without_backend_packages() -> None:
    """Loading a config must not need asyncssh (or any later backend's package)."""
    code = ("import sys, aftd.config, aftd.vfs.local_config, aftd.vfs.sftp_config, "
            "aftd.vfs.azure_config, aftd.vfs.gcs_config; "
            "aftd.config.load_config('config/aftd.example.toml'); "
            "bad = [m for m in ('asyncssh', 'hvac', 'aiohttp', 'azure', 'jwt') "
            "if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_params_limit_defaults_to_the_body_limit_when_that_is_smaller(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "[server]\nmax_body_bytes = 2048\n"))
    assert (cfg.server.max_body_bytes, cfg.server.max_params_bytes) == (2048, 2048)


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    cfg = load_config(_write(tmp_path / "sub", "[http]\nca_file = \"ca.pem\"\n"
                             "[secrets.file]\npath = \"~/s.toml\"\n"))
    assert cfg.http.ca_file == tmp_path / "sub" / "ca.pem"
    assert cfg.secrets.file is not None
    assert cfg.secrets.file.path == Path.home() / "s.toml"
    assert cfg.source == str(tmp_path / "sub" / "aftd.toml")


def test_models_are_frozen_and_hide_digests(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, f"[[auth.api_keys]]\nname = \"k\"\nsha256 = \""
                             f"{'AB' * 32}\"\n"))
    assert cfg.api_keys[0].sha256 == "ab" * 32  # stored lower-case
    assert "ab" * 32 not in repr(cfg) and "ab" * 32 not in str(cfg.api_keys)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.jobs.max_concurrent = 1  # type: ignore[misc]


def test_python_callers_keep_the_old_constructors() -> None:
    assert ServerConfig(port=8443).listen == "127.0.0.1:8443"
    assert (ServerConfig(host="::1", port=1).host, ServerConfig(host="::1", port=1).port) == \
        ("::1", 1)
    assert VfsConfig("a", "local", "/x").options == {}


def test_vfs_entries_survive_the_trip_to_a_worker_process() -> None:
    configs = parse_vfs_section(Section({"p": SFTP, "l": {"type": "local", "root": "/x"}},
                                        "aftd.toml", "vfs"))
    again = parse_vfs_section(Section(vfs_tables(configs), "<worker spec>", "vfs"))
    assert again == configs
    assert again["p"].options["ciphers"] == configs["p"].options["ciphers"]
    assert dataclasses.is_dataclass(again["p"]) is False
