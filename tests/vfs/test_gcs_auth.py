"""Service-account keys for the GCS backend: parsing errors that never show the key, and the
JWT-bearer token exchange against a token endpoint of our own (Google's cannot be reached from
here; fake-gcs-server has none), which checks the assertion's signature with the public key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aftd.errors import TransferError
from aftd.vfs.gcs_auth import SCOPE, TokenSource, parse_service_account

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption()).decode()


def key_json(**over: Any) -> str:
    data = {"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
            "private_key": PEM, "private_key_id": "kid1",
            "token_uri": "https://oauth2.googleapis.com/token"}
    data.update(over)
    return json.dumps({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(("text", "reason"), [
    ("not json " + PEM, "is not JSON"),
    ("[1, 2]", "not a JSON object"),
    (key_json(type="authorized_user"), "'type' must be \"service_account\""),
    (key_json(client_email=None), "client_email"),
    (key_json(private_key=""), "private_key"),
    (key_json(private_key=PEM.replace("A", "B", 40)), "not a PEM RSA private key"),
    (key_json(private_key="-----BEGIN PRIVATE KEY-----\nS3CR3T\n-----END PRIVATE KEY-----"),
     "not a PEM RSA private key"),
])
def test_malformed_key_names_the_secret_not_the_value(text: str, reason: str) -> None:
    with pytest.raises(TransferError) as ei:
        parse_service_account(text, vfs="gcs", secret="gcs-sa-json")
    msg = str(ei.value)
    assert reason in msg
    assert "vfs 'gcs'" in msg and "credentials_secret 'gcs-sa-json'" in msg
    assert "PRIVATE KEY" not in msg and "S3CR3T" not in msg and PEM[40:80] not in msg


def test_parsed_account_hides_its_key() -> None:
    account = parse_service_account(key_json(), vfs="gcs", secret="s")
    assert "PRIVATE" not in repr(account) and "kid1" not in repr(account)
    assert account.client_email == "sa@p.iam.gserviceaccount.com"


class TokenServer:
    """A token endpoint checking the JWT-bearer grant as Google's does (signature, audience,
    scope); ``refuse`` makes it answer like Google for a revoked key."""

    def __init__(self) -> None:
        self.calls = 0
        self.refuse = False
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        form = await request.post()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        if self.refuse:
            return web.json_response({"error": "invalid_grant",
                                      "error_description": "Invalid JWT Signature."}, status=400)
        claims = jwt.decode(str(form["assertion"]), KEY.public_key(), algorithms=["RS256"],
                            audience=self.url)
        assert claims["scope"] == SCOPE and claims["iss"] == "sa@p.iam.gserviceaccount.com"
        assert jwt.get_unverified_header(str(form["assertion"]))["kid"] == "kid1"
        return web.json_response({"access_token": f"tok{self.calls}", "expires_in": 3599,
                                  "token_type": "Bearer"})


@pytest.fixture
async def token_server() -> AsyncIterator[TokenServer]:
    server = TokenServer()
    app = web.Application()
    app.router.add_post("/token", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/token"
    yield server
    await runner.cleanup()


async def test_token_exchange_and_cache(token_server: TokenServer) -> None:
    account = parse_service_account(key_json(token_uri=token_server.url), vfs="gcs", secret="s")
    source = TokenSource(account, vfs="gcs")
    async with aiohttp.ClientSession() as session:
        assert await source.token(session) == "tok1"
        assert await source.token(session) == "tok1"  # cached until shortly before expiry
        source.forget()
        assert await source.token(session) == "tok2"
    assert token_server.calls == 2


async def test_refused_key_is_a_clear_error(token_server: TokenServer) -> None:
    token_server.refuse = True
    account = parse_service_account(key_json(token_uri=token_server.url), vfs="gcs", secret="s")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransferError) as ei:
            await TokenSource(account, vfs="gcs").token(session)
    msg = str(ei.value)
    assert "vfs 'gcs'" in msg and "invalid_grant" in msg and "check credentials_secret" in msg
    assert "PRIVATE" not in msg


async def test_unreachable_token_endpoint_is_named() -> None:
    account = parse_service_account(key_json(token_uri="http://127.0.0.1:9/token"), vfs="gcs",
                                    secret="s")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransferError, match="cannot reach the token endpoint"):
            await TokenSource(account, vfs="gcs", timeout_s=5).token(session)
