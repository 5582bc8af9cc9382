"""File and env providers, the chain's errors, redaction and the CLI check (no server)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from aftd import redact
from aftd.errors import SecretError
from aftd.secrets.base import SecretNotFoundError, parse_name
from aftd.secrets.chain import SecretChain
from aftd.secrets.cli import check_names, run_check
from aftd.secrets.config import FileConfig, SecretsConfig
from aftd.secrets.env import env_var_name
from tests.secrets.helpers import secret_value, write_private


def file_chain(path: Path, *, order: tuple[str, ...] = ("file",), ttl: float = 30.0) -> SecretChain:
    return SecretChain(SecretsConfig(order=order, cache_ttl_s=ttl, file=FileConfig(path)))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
async def test_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_private(tmp_path / "secrets.toml", 'api = "abcdefgh-value"\n', mode)
    chain = file_chain(path)
    with pytest.raises(SecretError, match=rf"{oct(mode)[2:]}.*refusing it.*0600") as info:
        await chain.start()
    assert "abcdefgh-value" not in str(info.value)
    with pytest.raises(SecretError, match="refusing"):
        await chain.get("api")
    await chain.aclose()


@pytest.mark.parametrize("mode", [0o600, 0o400])
async def test_private_file_is_read(tmp_path: Path, mode: int) -> None:
    value = secret_value("file")
    text = f'api = "{value}"\n[db]\nuser = "app"\npassword = "{value}-db"\n'
    path = write_private(tmp_path / "secrets.toml", text, mode)
    chain = file_chain(path)
    await chain.start()
    assert await chain.get("api") == value
    assert await chain.get("db#password") == f"{value}-db"
    assert await chain.get("db#user") == "app"
    assert await chain.which("api") == "file"
    await chain.aclose()


async def test_file_chmod_after_start_is_refused_and_rewrite_is_seen(tmp_path: Path) -> None:
    path = write_private(tmp_path / "s.toml", 'api = "first-value"\n')
    chain = file_chain(path, ttl=0)
    assert await chain.get("api") == "first-value"
    write_private(path, 'api = "second-value"\n')
    assert await chain.get("api") == "second-value"
    path.chmod(0o644)
    with pytest.raises(SecretError, match="refusing"):
        await chain.get("api")
    await chain.aclose()


async def test_file_syntax_error_does_not_quote_the_file(tmp_path: Path) -> None:
    path = write_private(tmp_path / "s.toml", 'api = "unterminated-secret-value\n')
    with pytest.raises(SecretError, match="not valid TOML") as info:
        await file_chain(path).get("api")
    assert "unterminated" not in str(info.value)


@pytest.mark.parametrize(("name", "var"), [
    ("orch-api-token", "AFTD_SECRET_ORCH_API_TOKEN"),
    ("partner.ssh/key", "AFTD_SECRET_PARTNER_SSH_KEY"),
    ("db#password", "AFTD_SECRET_DB_PASSWORD"),
    ("db#value", "AFTD_SECRET_DB"),
    ("MiXed_9", "AFTD_SECRET_MIXED_9"),
])
def test_env_var_mapping(name: str, var: str) -> None:
    assert env_var_name(parse_name(name)) == var


async def test_env_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    value = secret_value("env")
    monkeypatch.setenv("AFTD_SECRET_ORCH_API_TOKEN", value)
    monkeypatch.setenv("AFTD_SECRET_DB_USER", "app-user")
    chain = SecretChain(SecretsConfig(order=("env",)))
    assert await chain.get("orch-api-token") == value
    assert await chain.get("db#user") == "app-user"
    assert await chain.which("orch-api-token") == "env"
    await chain.aclose()


async def test_missing_secret_names_secret_and_providers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AFTD_SECRET_NOPE", raising=False)
    path = write_private(tmp_path / "s.toml", 'other = "x-value"\n')
    chain = file_chain(path, order=("file", "env"))
    with pytest.raises(SecretNotFoundError) as info:
        await chain.get("nope")
    msg = str(info.value)
    assert "'nope'" in msg
    assert f"file ({path})" in msg
    assert "env (AFTD_SECRET_NOPE)" in msg
    assert await chain.which("nope") is None
    await chain.aclose()


async def test_first_provider_in_order_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFTD_SECRET_API", "from-env-value")
    path = write_private(tmp_path / "s.toml", 'api = "from-file-value"\n')
    chain = file_chain(path, order=("env", "file"))
    assert await chain.get("api") == "from-env-value"
    assert await chain.which("api") == "env"
    await chain.aclose()


@pytest.mark.parametrize("name", ["", "../etc", "a/../b", "/abs", "a b", "a#", "a#b#c", "x\n"])
async def test_bad_names_are_rejected(name: str) -> None:
    chain = SecretChain(SecretsConfig(order=("env",)))
    with pytest.raises(SecretError, match="invalid"):
        await chain.get(name)
    await chain.aclose()


async def test_resolved_values_are_redacted_in_every_form(monkeypatch: pytest.MonkeyPatch) -> None:
    value = f"p@ss w/rd+{secret_value('redact')}&x=1"
    monkeypatch.setenv("AFTD_SECRET_REDACT_ME", value)
    chain = SecretChain(SecretsConfig(order=("env",)))
    await chain.get("redact-me")
    await chain.aclose()
    texts = [
        f"connect failed: https://user:{quote(value, safe='')}@host/x",
        f"GET https://host/cb?token={quote_plus(value)}&n=1",
        f"path https://host/{quote(value)}/x",
        f"error: server said {value!s} (500)",
        json.dumps({"body": f"echo {value}"}),
    ]
    for text in texts:
        scrubbed = redact.scrub(text)
        assert redact.MASK in scrubbed
        for form in (value, quote(value, safe=""), quote_plus(value), quote(value)):
            assert form not in scrubbed


async def test_lookup_observer_sees_provider_or_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFTD_SECRET_SEEN", "observed-value")
    monkeypatch.delenv("AFTD_SECRET_UNSEEN", raising=False)
    seen: list[tuple[str, str | None]] = []
    chain = SecretChain(SecretsConfig(order=("env",)), on_lookup=lambda n, p: seen.append((n, p)))
    await chain.get("seen")
    await chain.get("seen")  # a cache hit is still a lookup answered
    with pytest.raises(SecretError):
        await chain.get("unseen")
    await chain.aclose()
    assert seen == [("seen", "env"), ("seen", "env"), ("unseen", None)]


def test_repr_shows_no_values() -> None:
    chain = SecretChain(SecretsConfig(order=("env",)))
    assert "SecretChain(order=['env']" in repr(chain)


def test_cli_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    value = secret_value("cli")
    monkeypatch.setenv("AFTD_SECRET_IN_ENV", value)
    monkeypatch.delenv("AFTD_SECRET_ABSENT", raising=False)
    path = write_private(tmp_path / "s.toml", f'in-file = "{value}-f"\n')
    cfg = SecretsConfig(order=("file", "env"), file=FileConfig(path))
    out = io.StringIO()
    assert run_check(cfg, ["in-env", "in-file"], out) == 0
    assert out.getvalue() == "in-env: ok (env)\nin-file: ok (file)\n"
    out = io.StringIO()
    assert run_check(cfg, ["in-env", "absent", "bad/../name"], out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == "in-env: ok (env)"
    assert lines[1].startswith("absent: FAILED: not found; tried file (")
    assert "env (AFTD_SECRET_ABSENT)" in lines[1]
    assert lines[2].startswith("bad/../name: FAILED: invalid secret name")
    assert value not in out.getvalue()


async def test_cli_check_refused_file(tmp_path: Path) -> None:
    path = write_private(tmp_path / "s.toml", 'a = "some-value"\n', 0o644)
    chain = file_chain(path)
    results = await check_names(chain, ["a", "b"])
    await chain.aclose()
    assert [r.ok for r in results] == [False, False]
    assert all("refusing" in (r.error or "") for r in results)


def test_cli_run_check_refused_file(tmp_path: Path) -> None:
    path = write_private(tmp_path / "s.toml", 'a = "some-value"\n', 0o644)
    out = io.StringIO()
    assert run_check(SecretsConfig(order=("file",), file=FileConfig(path)), ["a"], out) == 1
    assert "a: FAILED: " in out.getvalue()
    assert "refusing" in out.getvalue()
