"""API-key authentication and allow-lists, IPv4 and IPv6."""

from __future__ import annotations

import ipaddress

from aftd.apikeys import KeyRing, digest, generate_key
from aftd.authconfig import ApiKeyConfig


def _ring(*nets: str) -> tuple[KeyRing, str]:
    key = generate_key()
    cfg = ApiKeyConfig("k", digest(key), tuple(ipaddress.ip_network(n) for n in nets))
    return KeyRing([cfg, ApiKeyConfig("other", digest("other-key"), ())]), key


def test_missing_and_wrong_keys_are_unauthenticated() -> None:
    ring, _ = _ring("0.0.0.0/0")
    assert ring.authenticate(None, "127.0.0.1").key is None
    assert ring.authenticate("", "127.0.0.1").key is None
    assert ring.authenticate("nope", "127.0.0.1").key is None


def test_ipv4_allow_list() -> None:
    ring, key = _ring("10.1.0.0/16")
    assert ring.authenticate(key, "10.1.2.3").allowed
    assert not ring.authenticate(key, "10.2.0.1").allowed
    assert ring.authenticate(key, "10.2.0.1").key is not None  # known key, wrong place: 403


def test_ipv6_allow_list_and_mapped_addresses() -> None:
    ring, key = _ring("2001:db8::/32", "127.0.0.0/8")
    assert ring.authenticate(key, "2001:db8::1").allowed
    assert not ring.authenticate(key, "2001:db9::1").allowed
    assert ring.authenticate(key, "::ffff:127.0.0.1").allowed  # IPv4-mapped IPv6
    assert ring.authenticate(key, "fe80::1%eth0").allowed is False
    assert not ring.authenticate(key, None).allowed
    assert not ring.authenticate(key, "garbage").allowed


def test_empty_allow_list_allows_nothing() -> None:
    ring = KeyRing([ApiKeyConfig("other", digest("other-key"), ())])
    assert not ring.authenticate("other-key", "127.0.0.1").allowed
