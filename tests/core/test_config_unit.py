"""Config validation: every error names the file, the dotted key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from aftd.config import Config, load_config
from aftd.errors import ConfigError


def _load(tmp_path: Path, text: str) -> Config:
    p = tmp_path / "aftd.toml"
    p.write_text(text)
    return load_config(p)


def test_embedded_defaults() -> None:
    cfg = load_config(None)
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 44399)
    assert cfg.jobs.max_concurrent == 64
    assert cfg.api_keys == ()
    assert (cfg.paths.scripts_dir / "hello.py").is_file()


def test_full_design_example_loads(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
[server]
listen = "[::1]:44399"
[[auth.api_keys]]
name = "orchestrator"
sha256 = "%s"
allow_from = ["127.0.0.1/32", "::1/128"]
[paths]
state_dir = "state"
scripts_dir = "/etc/aftd/scripts"
[jobs]
max_concurrent = 8
""" % ("ab" * 32))
    assert cfg.server.host == "::1"
    assert cfg.paths.state_dir == tmp_path / "state"
    assert cfg.api_keys[0].name == "orchestrator"
    assert "ab" * 32 not in repr(cfg)


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("[server]\nlisten = 5\n", "server.listen", "must be a string"),
    ("[server]\nlisten = \"nohost\"\n", "server.listen", "HOST:PORT"),
    ("[server]\nlisten = \"127.0.0.1:99999\"\n", "server.listen", "port"),
    ("[server]\ntls_cert = \"/a.pem\"\n", "server.tls_key", "together"),
    ("[jobs]\nmax_concurrent = 0\n", "jobs.max_concurrent", ">= 1"),
    ("[jobs]\nmax_concurrent = true\n", "jobs.max_concurrent", "boolean"),
    ("[jobs]\nfoo = 1\n", "jobs.foo", "unknown key"),
    ("[nonsense]\n", "nonsense", "unknown key"),
    ("[[auth.api_keys]]\nname = \"a\"\nsha256 = \"xyz\"\n", "auth.api_keys[0].sha256", "hex"),
    ("[[auth.api_keys]]\nsha256 = \"%s\"\n" % ("a" * 64), "auth.api_keys[0].name", "required"),
    ("[[auth.api_keys]]\nname = \"a\"\nsha256 = \"%s\"\nallow_from = [\"300.1.1.1/8\"]\n"
     % ("a" * 64), "auth.api_keys[0].allow_from[0]", "CIDR"),
    ("[logging]\nlevel = \"loud\"\n", "logging.level", "one of"),
    ("[vfs.x]\ntype = \"local\"\n", "vfs.x.root", "required"),
    ("[vfs.x]\ntype = \"warp\"\nroot = \"/\"\n", "vfs.x.type", "warp"),
])
def test_errors_name_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert err.value.key == key
    assert reason in str(err.value)
    assert str(tmp_path / "aftd.toml") in str(err.value)


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        _load(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_scripts_section_and_loop_block_threshold(tmp_path: Path) -> None:
    cfg = load_config(None)
    assert (cfg.scripts.isolation, cfg.scripts.max_workers) == ("inline", 16)
    assert cfg.jobs.loop_block_warn_s == 1.0
    cfg = _load(tmp_path, """
[jobs]
loop_block_warn_s = 0
[scripts]
isolation = "process"
max_workers = 2
kill_grace_s = 0.5
""")
    assert (cfg.scripts.isolation, cfg.scripts.max_workers, cfg.scripts.kill_grace_s) == \
        ("process", 2, 0.5)
    assert cfg.jobs.loop_block_warn_s == 0


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("[scripts]\nisolation = \"thread\"\n", "scripts.isolation", "inline, process"),
    ("[scripts]\nisolation = 1\n", "scripts.isolation", "must be a string"),
    ("[scripts]\nmax_workers = 0\n", "scripts.max_workers", ">= 1"),
    ("[scripts]\nkill_grace_s = -1\n", "scripts.kill_grace_s", ">= 0"),
    ("[scripts]\nsandbox = true\n", "scripts.sandbox", "unknown key"),
    ("[jobs]\nloop_block_warn_s = 0.05\n", "jobs.loop_block_warn_s", "0 (off) or at least 0.1"),
    ("[jobs]\nloop_block_warn_s = -1\n", "jobs.loop_block_warn_s", ">= 0"),
])
def test_scripts_and_loop_errors_name_key(tmp_path: Path, text: str, key: str,
                                          reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert err.value.key == key
    assert reason in str(err.value)
