"""``aftd serve`` with no config at all: generated key (handed over once, stored hashed), TLS."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp

from aftd.tls import server_context


async def _serve_until_ready(env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "aftd.cli.aftd_main", "serve"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    for _ in range(200):
        if "api_listening" in out.read_text() or proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    assert proc.poll() is None, out.read_text()
    return proc


async def test_fresh_start_generates_key_and_cert(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    env.pop("AFTD_STATE_DIR", None)
    state = tmp_path / "aftd"
    out = tmp_path / "first.log"
    proc = await _serve_until_ready(env, out)
    try:
        # stdout is not a terminal: the key is in a private file, the log only names the file.
        key_file = state / "initial-api-key"
        key = key_file.read_text().strip()
        assert key.startswith("aft_")
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert f'"path": "{key_file}"' in out.read_text()
        assert key not in out.read_text()
        stored = (state / "api_key.sha256").read_text().strip()
        assert stored == hashlib.sha256(key.encode()).hexdigest()
        assert key not in "".join(p.read_text(errors="ignore") for p in state.rglob("*")
                                  if p.is_file() and p.suffix != ".sqlite" and p != key_file)
        ctx = ssl.create_default_context(cafile=str(state / "tls" / "cert.pem"))
        async with aiohttp.ClientSession() as s:
            async with s.post("https://127.0.0.1:44399/v1/jobs", ssl=ctx,
                              headers={"X-API-Key": key},
                              json={"scriptId": "hello", "params": {"name": "fresh"}}) as r:
                assert r.status == 201
            tls12 = ssl.create_default_context(cafile=str(state / "tls" / "cert.pem"))
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            async with s.get("https://127.0.0.1:44399/livez", ssl=tls12) as r:
                assert r.status == 200
        # The server refuses anything older than TLS 1.2.
        server = server_context(state / "tls" / "cert.pem", state / "tls" / "key.pem")
        assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    out2 = tmp_path / "second.log"
    proc = await _serve_until_ready(env, out2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert "api_key_generated" not in out2.read_text()
    assert key_file.read_text().strip() == key  # not replaced by a second key
