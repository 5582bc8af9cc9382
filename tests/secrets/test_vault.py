"""The vault provider and the chain against a real OpenBao dev server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from aftd.errors import SecretError
from aftd.secrets.base import SecretNotFoundError
from aftd.secrets.chain import SecretChain
from aftd.secrets.config import SecretsConfig, VaultConfig
from aftd.secrets.vault import VaultProvider
from tests.fixtures.openbao import OpenBaoServer
from tests.fixtures.procs import free_port
from tests.fixtures.waiting import wait_until
from tests.secrets.helpers import secret_value, write_private

MakeChain = Callable[..., SecretChain]


def vault_of(chain: SecretChain) -> VaultProvider:
    provider = chain.providers[0]
    assert isinstance(provider, VaultProvider)
    return provider


async def test_token_auth_fields_and_missing(
        openbao: OpenBaoServer, make_chain: MakeChain, uniq: str) -> None:
    value = secret_value("token")
    openbao.write_kv(f"aftd/{uniq}/api", {"value": value, "user": "svc-user"})
    token = openbao.create_token(policies=[openbao.read_policy()])
    chain = make_chain(openbao, token=token)
    assert await chain.get(f"{uniq}/api") == value
    assert await chain.get(f"{uniq}/api#user") == "svc-user"
    assert await chain.which(f"{uniq}/api") == "vault"
    with pytest.raises(SecretNotFoundError) as info:
        await chain.get(f"{uniq}/absent")
    assert f"'{uniq}/absent'" in str(info.value)
    assert f"vault (secret/aftd/{uniq}/absent)" in str(info.value)
    with pytest.raises(SecretNotFoundError, match="nofield"):
        await chain.get(f"{uniq}/api#nofield")


async def test_token_from_environment(
        openbao: OpenBaoServer, uniq: str, monkeypatch: pytest.MonkeyPatch) -> None:
    openbao.write_kv(f"aftd/{uniq}", {"value": "env-token-works"})
    monkeypatch.setenv("VAULT_TOKEN", openbao.create_token(policies=[openbao.read_policy()]))
    chain = SecretChain(SecretsConfig(order=("vault",), vault=VaultConfig(url=openbao.url)))
    try:
        assert await chain.get(uniq) == "env-token-works"
    finally:
        await chain.aclose()


async def test_approle_auth(openbao: OpenBaoServer, make_chain: MakeChain, uniq: str,
                            tmp_path: Path) -> None:
    value = secret_value("approle")
    openbao.write_kv(f"aftd/{uniq}", {"value": value})
    role_id, secret_id = openbao.enable_approle(f"r-{uniq}", policies=[openbao.read_policy()])
    chain = make_chain(openbao, auth="approle",
                       role_id_file=write_private(tmp_path / "role", role_id),
                       secret_id_file=write_private(tmp_path / "sid", secret_id))
    await chain.start()
    assert vault_of(chain).stats.logins == 1
    assert await chain.get(uniq) == value


async def test_approle_bad_secret_id_is_a_clear_error(
        openbao: OpenBaoServer, make_chain: MakeChain, uniq: str, tmp_path: Path) -> None:
    role_id, _ = openbao.enable_approle(f"r-{uniq}", policies=[openbao.read_policy()])
    bad = secret_value("badsid")
    chain = make_chain(openbao, auth="approle",
                       role_id_file=write_private(tmp_path / "role", role_id),
                       secret_id_file=write_private(tmp_path / "sid", bad))
    pattern = r"secret 'x'.*invalid role or secret ID.*logging in"
    with pytest.raises(SecretError, match=pattern) as info:
        await chain.get("x")
    assert bad not in str(info.value)


async def test_policy_denial_is_a_clear_error(
        openbao: OpenBaoServer, make_chain: MakeChain, uniq: str) -> None:
    openbao.write_kv(f"aftd/{uniq}", {"value": secret_value("denied")})
    chain = make_chain(openbao, token=openbao.create_token(policies=["default"]))
    with pytest.raises(SecretError, match=rf"secret '{uniq}'.*denied access.*policy"):
        await chain.get(uniq)


async def test_cached_value_within_the_ttl(
        openbao: OpenBaoServer, make_chain: MakeChain, uniq: str) -> None:
    openbao.write_kv(f"aftd/{uniq}", {"value": "version-one"})
    chain = make_chain(openbao, ttl=3600)
    assert await chain.get(uniq) == "version-one"
    openbao.write_kv(f"aftd/{uniq}", {"value": "version-two"})
    assert await chain.get(uniq) == "version-one"  # served from the cache
    assert vault_of(chain).stats.reads == 1
    assert await make_chain(openbao, ttl=3600).get(uniq) == "version-two"  # a fresh cache


async def test_rotation_is_picked_up_after_ttl(
        openbao: OpenBaoServer, make_chain: MakeChain, uniq: str) -> None:
    openbao.write_kv(f"aftd/{uniq}", {"value": "before-rotation"})
    chain = make_chain(openbao, ttl=0.5)
    assert await chain.get(uniq) == "before-rotation"
    openbao.write_kv(f"aftd/{uniq}", {"value": "after-rotation"})

    async def rotated() -> bool:
        return await chain.get(uniq) == "after-rotation"

    await wait_until(rotated, 10, "the rotated value", step=0.2)


async def test_concurrent_lookups_share_one_request(
        openbao: OpenBaoServer, make_chain: MakeChain, uniq: str) -> None:
    openbao.write_kv(f"aftd/{uniq}", {"value": "shared-value"})
    chain = make_chain(openbao, ttl=0)  # no cache: only single-flight can merge the lookups
    vault = vault_of(chain)
    values = await asyncio.gather(*(chain.get(uniq) for _ in range(20)))
    assert values == ["shared-value"] * 20
    assert vault.stats.reads == 1
    await chain.get(uniq)
    assert vault.stats.reads == 2  # a later lookup is a new request


async def test_short_ttl_token_is_renewed(
        openbao: OpenBaoServer, make_chain: MakeChain, uniq: str) -> None:
    openbao.write_kv(f"aftd/{uniq}", {"value": "renewed-ok"})
    token = openbao.create_token(ttl="3s", renewable=True, policies=[openbao.read_policy()])
    chain = make_chain(openbao, ttl=0, token=token)
    await chain.start()
    vault = vault_of(chain)
    # Keep reading well past the token's original 3 s lifetime.
    end = time.monotonic() + 6
    while time.monotonic() < end:
        assert await chain.get(uniq) == "renewed-ok"
        await asyncio.sleep(0.5)
    assert vault.stats.renewals >= 2
    assert vault.stats.logins == 1
    assert openbao.token_ttl(token) > 0


async def test_relogin_when_renewal_fails(openbao: OpenBaoServer, make_chain: MakeChain,
                                          uniq: str, tmp_path: Path) -> None:
    openbao.write_kv(f"aftd/{uniq}", {"value": "relogin-ok"})
    role_id, secret_id = openbao.enable_approle(
        f"r-{uniq}", policies=[openbao.read_policy()], token_ttl="3s")
    chain = make_chain(openbao, ttl=0, auth="approle",
                       role_id_file=write_private(tmp_path / "role", role_id),
                       secret_id_file=write_private(tmp_path / "sid", secret_id))
    await chain.start()
    vault = vault_of(chain)
    first = vault.accessor
    openbao.revoke_accessor(first)  # the renewer's next renewal is refused
    await wait_until(lambda: vault.stats.logins >= 2, 20, "a second login", step=0.2)
    assert vault.stats.renew_failures >= 1
    assert vault.accessor != first
    assert await chain.get(uniq) == "relogin-ok"


async def test_server_outage_is_a_clear_error_and_chain_recovers(
        openbao_private: OpenBaoServer, make_chain: MakeChain) -> None:
    server = openbao_private
    value = secret_value("outage")
    server.write_kv("aftd/orch-api-token", {"value": value})
    chain = make_chain(server, ttl=0)
    assert await chain.get("orch-api-token") == value
    server.stop()
    with structlog.testing.capture_logs() as logs, pytest.raises(SecretError) as info:
        await chain.get("orch-api-token")
    msg = str(info.value)
    assert "'orch-api-token'" in msg
    assert "unreachable" in msg
    assert value not in msg
    assert value not in repr(logs)
    assert any(e["event"] == "secret_lookup_failed" for e in logs)
    server.start()
    server.write_kv("aftd/orch-api-token", {"value": value + "-new"})
    assert await chain.get("orch-api-token") == value + "-new"


async def test_unreachable_at_start_is_logged_not_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "some-unused-token")
    cfg = SecretsConfig(order=("vault",), vault=VaultConfig(
        url=f"http://127.0.0.1:{free_port()}", timeout_s=2.0))
    chain = SecretChain(cfg)
    try:
        with structlog.testing.capture_logs() as logs:
            await chain.start()
        assert [e["event"] for e in logs] == ["secret_provider_start_failed"]
        with pytest.raises(SecretError, match=r"secret 'a#b'.*unreachable"):
            await chain.get("a#b")
    finally:
        await chain.aclose()


async def test_token_auth_without_a_token_says_how_to_configure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    chain = SecretChain(SecretsConfig(order=("vault",), vault=VaultConfig(
        url=f"http://127.0.0.1:{free_port()}")))
    try:
        with pytest.raises(SecretError, match="token_file nor the VAULT_TOKEN"):
            await chain.get("a")
    finally:
        await chain.aclose()


def test_provider_repr_has_no_credentials(openbao: OpenBaoServer) -> None:
    provider = VaultProvider(VaultConfig(url=openbao.url))
    assert repr(provider) == f"VaultProvider(url='{openbao.url}', auth='token')"
    assert "token_file" not in repr(provider)


