"""Object keys: confinement to bucket + prefix, and modification times in metadata."""

from __future__ import annotations

import pytest

from aftd.vfs.base import PathEscapeError
from aftd.vfs.objkeys import ObjectKeys, check_prefix, mtime_from_meta, mtime_meta

ESCAPES = ["../x", "a/../../x", "..", "/etc/passwd", "/inbound/x", "a\\..\\..\\x", "a\\b",
           "..%2F..%2Fx", "a%2fb", "%2e%2e/x", "a%5Cb", "a/\x00b", "a\nb", "a\x7fb"]


@pytest.mark.parametrize("bad", ESCAPES)
def test_paths_that_could_leave_the_prefix_are_refused(bad: str) -> None:
    keys = ObjectKeys("lake", "inbound/")
    with pytest.raises(PathEscapeError) as ei:
        keys.rel(bad)
    assert "'lake'" in str(ei.value)
    assert "\x00" not in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize(("path", "rel", "key"), [
    ("", "", "inbound/"), ("a/b.txt", "a/b.txt", "inbound/a/b.txt"),
    ("a//b/./c", "a/b/c", "inbound/a/b/c"), ("a/../b", "b", "inbound/b"),
    ("dir/", "dir", "inbound/dir"), ("100% sure.txt", "100% sure.txt", "inbound/100% sure.txt"),
    ("ünï/名前.bin", "ünï/名前.bin", "inbound/ünï/名前.bin"),
])
def test_paths_map_to_keys_under_the_prefix(path: str, rel: str, key: str) -> None:
    keys = ObjectKeys("lake", "/inbound/")
    assert keys.rel(path) == rel
    assert keys.key(rel) == key if rel else keys.dir_prefix(rel) == key


def test_no_prefix_is_the_whole_bucket() -> None:
    keys = ObjectKeys("lake", "")
    assert (keys.key("a/b"), keys.dir_prefix(""), keys.dir_prefix("a")) == ("a/b", "", "a/")


@pytest.mark.parametrize("bad", ["a/../b", "../x", "a\\b", "a%2Fb", "a//b", "./a"])
def test_bad_prefixes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"not allowed"):
        check_prefix(bad)


def test_listed_keys_that_cannot_be_addressed_are_left_out() -> None:
    keys = ObjectKeys("lake", "p/")
    assert keys.child("d", "p/d/x.txt", "p/d/") == "d/x.txt"
    assert keys.child("d", "p/d/sub/", "p/d/") == "d/sub"
    for odd in ("p/d/..", "p/d/a\\b", "p/d/a%2Fb", "p/d//", "p/d/.", "p/d/a\x01"):
        assert keys.child("d", odd, "p/d/") is None, odd


def test_mtime_metadata_round_trips_like_rclone() -> None:
    assert mtime_meta(1_650_000_000.25) == "1650000000.250000000"
    assert mtime_from_meta({"mtime": mtime_meta(1_650_000_000.25)}, 0.0) == 1_650_000_000.25
    assert mtime_from_meta({"Mtime": "1700000000.5"}, 0.0) == 1_700_000_000.5  # Azure keeps case
    for meta in (None, {}, {"mtime": "soon"}, {"mtime": "nan"}, {"other": "1"}):
        assert mtime_from_meta(meta, 42.0) == 42.0
