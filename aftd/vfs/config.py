"""``[vfs.NAME]`` entries: validated at load, errors name the entry and key (``vfs.NAME.key``).

Only secret *names* are stored here; values are resolved at connect time through the
:class:`~aftd.vfs.base.SecretResolver`, so a rotated secret is picked up by the next connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aftd.configparse import Section

__all__ = ["DEFAULT_CIPHERS", "KNOWN_TYPES", "SFTP_MAX_REQUEST", "VfsConfig", "parse_vfs_section"]

KNOWN_TYPES = ("local", "sftp")
# AES-GCM runs inside OpenSSL (through `cryptography`) and costs asyncssh about half the CPU of
# chacha20-poly1305, OpenSSH's default; see PERF.md.
DEFAULT_CIPHERS = (
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes128-ctr", "aes256-ctr",
)
# OpenSSH's sftp-server advertises this maximum; asking for 256 KiB kills the session.
SFTP_MAX_REQUEST = 261_120
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")


@dataclass(frozen=True)
class VfsConfig:
    name: str
    type: str
    root: str
    # Backend-specific keys, already type-checked; secret *names* only, never values.
    options: dict[str, Any] = field(default_factory=dict)


def parse_vfs_section(sec: Section) -> dict[str, VfsConfig]:
    out: dict[str, VfsConfig] = {}
    for name in sec.data:
        entry = sec.table(name)
        if not entry.has("type"):
            raise entry.error("type", f"is required (one of {', '.join(KNOWN_TYPES)})")
        vtype = entry.str("type", "", choices=KNOWN_TYPES)
        out[name] = _parse_local(name, entry) if vtype == "local" else _parse_sftp(name, entry)
        entry.finish()
    return out


def _parse_local(name: str, entry: Section) -> VfsConfig:
    root = entry.required_str("root")
    if not root.startswith("/"):
        raise entry.error("root", "must be an absolute path")
    chunk = entry.int("chunk_size", 4 * SFTP_MAX_REQUEST, minimum=4096, maximum=64 << 20)
    return VfsConfig(name=name, type="local", root=root, options={"chunk_size": chunk})


def _parse_sftp(name: str, entry: Section) -> VfsConfig:
    opts: dict[str, Any] = {
        "host": entry.required_str("host"),
        "port": entry.int("port", 22, minimum=1, maximum=65535),
        "user": entry.required_str("user"),
    }
    _one_of(entry, opts, "key_secret", "password_secret")
    opts["passphrase_secret"] = entry.str("passphrase_secret", "")
    if opts["passphrase_secret"] and not opts["key_secret"]:
        raise entry.error("passphrase_secret", "only makes sense with key_secret")
    _one_of(entry, opts, "known_hosts", "host_key_sha256")
    if opts["host_key_sha256"] and not _FINGERPRINT.match(opts["host_key_sha256"]):
        raise entry.error("host_key_sha256", "must look like 'SHA256:...' as printed by "
                          "`ssh-keygen -lf KEY`")
    opts.update(_sftp_tuning(entry))
    root = entry.str("root", "")
    return VfsConfig(name=name, type="sftp", root=root, options=opts)


def _one_of(entry: Section, opts: dict[str, Any], a: str, b: str) -> None:
    opts[a], opts[b] = entry.str(a, ""), entry.str(b, "")
    if bool(opts[a]) == bool(opts[b]):
        raise entry.error(a, f"exactly one of {a} or {b} is required")


def _sftp_tuning(entry: Section) -> dict[str, Any]:
    ciphers = entry.str_list("ciphers", DEFAULT_CIPHERS)
    if not ciphers:
        raise entry.error("ciphers", "must not be empty")
    return {
        "max_connections": entry.int("max_connections", 4, minimum=1, maximum=64),
        "max_sessions": entry.int("max_sessions", 4, minimum=1, maximum=64),
        "keepalive_s": entry.float("keepalive_s", 30.0, minimum=0),
        "connect_timeout_s": entry.float("connect_timeout_s", 15.0, minimum=0.1),
        "ciphers": ciphers,
        "block_size": entry.int("block_size", SFTP_MAX_REQUEST, minimum=4096,
                                maximum=SFTP_MAX_REQUEST),
        "requests_in_flight": entry.int("requests_in_flight", 16, minimum=1, maximum=256),
    }
