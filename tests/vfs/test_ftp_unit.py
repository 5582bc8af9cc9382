"""The ftp backend without a server: its config, listing parsers, FEAT, times, path checks."""

from __future__ import annotations

import calendar
from typing import Any

import pytest

from aftd.configmodel import Section
from aftd.errors import ConfigError, TransferError
from aftd.vfs.base import PathEscapeError
from aftd.vfs.config import parse_vfs_section
from aftd.vfs.ftp_client import format_mdtm, parse_features, parse_mdtm
from aftd.vfs.ftp_links import LinkMap
from aftd.vfs.ftp_list import Entry, UnparsedLine, parse_list, parse_list_line, parse_mlsx_line
from aftd.vfs.ftp_names import refuse_unsafe

FTP = {"type": "ftp", "host": "ftp.example.net", "user": "transfer",
       "password_secret": "partner-ftp-password"}
PIN = "9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08"
NOW = calendar.timegm((2026, 11, 30, 12, 0, 0))


def parse(entry: dict[str, Any]) -> Any:
    return parse_vfs_section(Section({"p": entry}, "aftd.toml", "vfs"))["p"]


def test_defaults_are_explicit_tls_passive_port_21() -> None:
    o = parse(FTP).options
    assert (o["tls"], o["port"], o["passive"], o["ca_file"], o["cert_sha256"]) == (
        "explicit", 21, True, None, "")
    assert o["max_connections"] == 4


def test_implicit_tls_defaults_to_port_990_unless_given() -> None:
    assert parse({**FTP, "tls": "implicit"}).options["port"] == 990
    assert parse({**FTP, "tls": "implicit", "port": 2990}).options["port"] == 2990


def test_pin_ignores_colons_and_case() -> None:
    assert parse({**FTP, "cert_sha256": PIN}).options["cert_sha256"] == (
        PIN.replace(":", "").lower())


@pytest.mark.parametrize(("entry", "key", "reason"), [
    ({**FTP, "tls": "starttls"}, "vfs.p.tls", "explicit"),
    ({**FTP, "password_secret": ""}, "vfs.p.password_secret", "must not be empty"),
    ({k: v for k, v in FTP.items() if k != "password_secret"}, "vfs.p.password_secret",
     "is required"),
    ({**FTP, "host": ""}, "vfs.p.host", "must not be empty"),
    ({**FTP, "port": 70000}, "vfs.p.port", "<= 65535"),
    ({**FTP, "cert_sha256": "abc"}, "vfs.p.cert_sha256", "64 hex digits"),
    ({**FTP, "cert_sha256": PIN, "ca_file": "/etc/ca.pem"}, "vfs.p.cert_sha256",
     "either ca_file or cert_sha256"),
    ({**FTP, "tls": "none", "ca_file": "/etc/ca.pem"}, "vfs.p.ca_file", "only makes sense"),
    ({**FTP, "tls": "none", "cert_sha256": PIN}, "vfs.p.cert_sha256", "only makes sense"),
    ({**FTP, "passive": "yes"}, "vfs.p.passive", "true or false"),
    ({**FTP, "password": "hunter2"}, "vfs.p.password", "unknown key"),
])
def test_bad_entries_name_the_key(entry: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(entry)
    assert ei.value.key == key
    assert reason in ei.value.reason
    assert "hunter2" not in str(ei.value)


# -- LIST -------------------------------------------------------------------------------------

def test_vsftpd_list_lines() -> None:
    text = (
        "drwxr-xr-x    3 104      106          4096 Nov 30 23:41 .\r\n"
        "drwxr-xr-x    3 104      106          4096 Nov 30 23:41 ..\r\n"
        "-rw-r--r--    1 104      106             1 Nov 30 23:41 .hidden\r\n"
        "drwxr-xr-x    2 104      106          4096 Jan 02  2020 dd\r\n"
        "-rw-r--r--    1 104      106          1000 Nov 30 23:41  two  spaces \r\n"
        "lrwxrwxrwx    1 0        0               6 Nov 30 23:41 link -> ../a b\r\n"
        "prw-r--r--    1 0        0               0 Nov 30 23:41 fifo\r\n"
        "crw-rw-rw-    1 0        0          1,   3 Nov 30 23:41 null\r\n")
    parsed, bad = parse_list(text + "half of a name\r\n", now=NOW)
    assert bad == ["half of a name"]
    entries = {e.name: e for e in parsed}
    assert set(entries) == {".hidden", "dd", " two  spaces ", "link", "fifo", "null"}
    assert entries[".hidden"] == Entry(".hidden", "file", 1,
                                       calendar.timegm((2026, 11, 30, 23, 41, 0)) - 0.0, 0o644)
    assert entries["dd"].kind == "dir"
    assert entries["dd"].mtime == calendar.timegm((2020, 1, 2, 0, 0, 0))
    assert entries["link"].kind == "link" and entries["link"].target == "../a b"
    assert entries["fifo"].kind == "special" and entries["null"].kind == "special"
    assert entries[" two  spaces "].size == 1000
    assert not any(e.precise for e in entries.values())


def test_list_time_without_year_is_within_the_last_year() -> None:
    # "Dec 25" seen on 30 Nov 2026 is last Christmas, not next.
    entry = parse_list_line("-rw-r--r--   1 root     root  5 Dec 25 10:00 x", now=NOW)
    assert entry is not None and entry.mtime == calendar.timegm((2025, 12, 25, 10, 0, 0))


def test_list_without_group_column_and_dos_format() -> None:
    e = parse_list_line("-rw-r--r-- 1 owner 42 Mar 03 04:05 no group", now=NOW)
    assert e is not None and (e.name, e.size) == ("no group", 42)
    d = parse_list_line("12-01-20  10:00PM       <DIR>          Some Dir")
    f = parse_list_line("12-01-20  09:05AM                 1234 file.txt")
    assert d is not None and (d.name, d.kind, d.mtime) == (
        "Some Dir", "dir", calendar.timegm((2020, 12, 1, 22, 0, 0)))
    assert f is not None and (f.kind, f.size) == ("file", 1234)
    assert parse_list_line("total 12") is None


def test_unreadable_list_line_is_an_error() -> None:
    with pytest.raises(UnparsedLine):
        parse_list("this is not a listing\r\n")


# -- MLSD, FEAT, times --------------------------------------------------------------------------

def test_mlsd_facts() -> None:
    f = parse_mlsx_line("modify=20200102030405;perm=r;size=5;type=file;unix.mode=0o644; a; b")
    assert f == Entry("a; b", "file", 5, calendar.timegm((2020, 1, 2, 3, 4, 5)), 0o644, True)
    assert parse_mlsx_line("type=cdir;modify=20200102030405; .") is None
    assert parse_mlsx_line("type=dir; d").kind == "dir"  # type: ignore[union-attr]
    link = parse_mlsx_line("type=OS.unix=slink:/etc/passwd; l")
    assert link is not None and (link.kind, link.target) == ("link", "/etc/passwd")
    assert parse_mlsx_line("type=OS.unix=chr-1/3; null").kind == "special"  # type: ignore[union-attr]
    with pytest.raises(UnparsedLine):
        parse_mlsx_line("nofactsnospace")


def test_feat_parsing_finds_hash_commands_and_mlst_facts() -> None:
    feats = parse_features("211-Features:\r\n EPSV\r\n MDTM\r\n MLST type*;size*;modify*;\r\n"
                           " HASH SHA-1;SHA-256*;MD5\r\n REST STREAM\r\n211 End")
    assert {"EPSV", "MDTM", "MLST", "HASH", "REST"} <= feats.names
    assert feats.mlst and feats.rest_stream and not feats.mfmt
    assert feats.sha256_command == "HASH"
    assert feats.mlst_facts == ("type*", "size*", "modify*")
    assert parse_features("211-Features:\r\n XSHA256\r\n211 End").sha256_command == "XSHA256"
    assert parse_features("211-Features:\r\n MDTM\r\n211 End").sha256_command == ""


def test_mdtm_round_trip() -> None:
    assert parse_mdtm("20200102030405") == calendar.timegm((2020, 1, 2, 3, 4, 5))
    assert parse_mdtm("20200102030405.250") == calendar.timegm((2020, 1, 2, 3, 4, 5)) + 0.25
    assert parse_mdtm("2020010203040") is None and parse_mdtm("20201302030405") is None
    assert format_mdtm(1_600_000_000.9) == "20200913122640"


@pytest.mark.parametrize("bad", ["a\r\nDELE x", "a\nb", "a\rb", "..\\x", "a\\b", "..%2fetc",
                                 "%2F", "a%5Cb", "a%5cb"])
def test_ftp_refuses_injection_and_foreign_separators(bad: str) -> None:
    with pytest.raises(PathEscapeError) as ei:
        refuse_unsafe("p", bad)
    assert "\r" not in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize("ok", ["a b.txt", "100%.txt", "%41", "ünï/名前"])
def test_ftp_accepts_ordinary_names(ok: str) -> None:
    refuse_unsafe("p", ok)


def test_link_map_resolves_lexically_inside_the_root() -> None:
    links = LinkMap("p")
    links.remember("t/loop", ".")
    links.remember("t/up", "..")
    links.remember("t/dir", "sub")
    links.remember("t/sub/back", "../dir/x")
    links.remember("t/abs", "/srv/root/t/sub")
    links.remember("t/out", "../../etc")
    links.remember("t/far", "/etc")
    links.remember("t/a", "b")
    links.remember("t/b", "a")
    canon = lambda rel: links.canonical(rel, "/srv/root")  # noqa: E731
    assert canon("t/loop") == "t" and canon("t/up") == ""
    assert canon("t/dir/f") == "t/sub/f" and canon("t/sub/back") == "t/sub/x"
    assert canon("t/abs/f") == "t/sub/f"
    assert canon("t/plain/f") == "t/plain/f"
    for bad in ("t/out", "t/far"):
        with pytest.raises(PathEscapeError, match="outside the VFS root"):
            canon(bad)
    with pytest.raises(TransferError, match="too many levels of symlinks"):
        canon("t/a")
