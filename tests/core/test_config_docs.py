"""The example config, the config reference and its JSON Schema are generated from the models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aftd import config_docs
from aftd.config import load_config
from aftd.errors import ConfigError
from aftd.vfs.config import VFS_TYPES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "aftd.example.toml"


def test_committed_files_match_the_models() -> None:
    stale = config_docs.check()
    assert not stale, f"{stale} drifted from the models: run python -m aftd.config_docs --write"


def test_drift_is_detected_and_rewritten(tmp_path: Path) -> None:
    assert sorted(config_docs.write(tmp_path)) == sorted(config_docs.OUTPUTS)
    assert config_docs.check(tmp_path) == []
    ref = tmp_path / "docs" / "config.md"
    ref.write_text(ref.read_text().replace("| `max_connections` |", "| `max_conns` |"))
    assert config_docs.check(tmp_path) == ["docs/config.md"]
    r = subprocess.run([sys.executable, "-m", "aftd.config_docs", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr  # the repository's own copies are current


def test_example_passes_check_config() -> None:
    r = subprocess.run([sys.executable, "-m", "aftd.cli.aftd_main", "check-config", "--config",
                        str(EXAMPLE)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    # The example has one entry per VFS type.
    assert f"OK (1 API keys, {len(VFS_TYPES.names)} VFS, secrets order vault, file, env)" \
        in r.stdout


def test_example_shows_every_key_with_a_description() -> None:
    text = EXAMPLE.read_text()
    for table in config_docs.tables():
        keys = list(table.keys())
        if not keys:
            continue
        mark = "# " if table.commented else ""  # example triggers are commented out
        # [[triggers]] appears once per trigger type: one of its tables has every key.
        bodies = [text[m.start():].split("\n\n", 1)[0] for m in
                  re.finditer(re.escape(f"\n{mark}{table.header}\n"), text)]
        assert any(all(re.search(rf"\n(# )?{name} = ", body) for name, _ in keys)
                   for body in bodies), table.header
        for name, info in keys:
            assert info.description, (table.header, name)
    # Commented-out keys are the ones unset by default; the rest are the defaults themselves.
    data = tomllib.loads(text)
    assert data["jobs"]["max_concurrent"] == 64 and data["server"]["max_connections"] == 256


def test_json_schema_describes_the_vfs_union() -> None:
    schema = json.loads((ROOT / "docs" / "config.schema.json").read_text())
    vfs = schema["properties"]["vfs"]["additionalProperties"]
    assert set(vfs["discriminator"]["mapping"]) == set(VFS_TYPES.names)
    assert {"local", "sftp", "ftp", "azure", "gcs"} <= set(VFS_TYPES.names)
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(("text", "message"), [
    ('[vfs.partner]\ntype = "sftp"\nhost = "h"\nuser = "u"\nkey_secret = "k"\n'
     'known_hosts = "/kh"\nport = 70000\n', "vfs.partner.port: must be <= 65535, got 70000"),
    ('[[auth.api_keys]]\nname = "a"\nsha256 = "x"\n',
     "auth.api_keys[0].sha256: must be a 64-character hex SHA-256 digest"),
])
def test_the_references_error_examples_are_real(tmp_path: Path, text: str, message: str) -> None:
    assert message in (ROOT / "docs" / "config.md").read_text()
    p = tmp_path / "aftd.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert f"{p}: {message}" in str(err.value)
