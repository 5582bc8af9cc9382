"""The pieces of a watch that need no daemon: which names fire, which mounts inotify can be
trusted on, where `after = "move"` puts a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from aftd.triggers.after import move_target
from aftd.triggers.files import file_key, is_candidate, is_temporary, key_digest
from aftd.triggers.inotify import filesystem_of, inotify_trusted
from aftd.triggers.watch_config import WatchTriggerConfig
from aftd.vfs.base import FileInfo

MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:50 / /mnt/nfs rw,relatime - nfs4 server:/export rw,vers=4.2
41 27 0:51 / /mnt/nfs/local rw,relatime - ext4 /dev/vdb rw
42 27 0:52 / /mnt/sshfs rw,relatime - fuse.sshfs user@host:/ rw
43 27 0:53 / /mnt/with\\040space rw - cifs //srv/share rw
"""


@pytest.mark.parametrize(("path", "fstype"), [
    ("/srv/in", "ext4"), ("/mnt/nfs/in", "nfs4"), ("/mnt/nfs/local/in", "ext4"),
    ("/mnt/nfsish", "ext4"), ("/mnt/sshfs/x", "fuse.sshfs"), ("/mnt/with space/x", "cifs"),
])
def test_the_filesystem_of_a_path_is_its_longest_mount(tmp_path: Path, path: str,
                                                       fstype: str) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert filesystem_of(path, str(info)) == fstype


def test_inotify_is_trusted_on_this_machines_tmp() -> None:
    trusted, fstype = inotify_trusted("/tmp")
    assert fstype and trusted == (fstype not in ("nfs", "nfs4", "cifs", "9p")
                                  and not fstype.startswith("fuse"))


@pytest.mark.parametrize(("name", "temporary"), [
    ("a.csv", False), ("a.csv.part", True), ("a.PART", True), ("a.tmp", True),
    (".~lock.a.csv#", True), (".hidden", True), (".a.csv.1f2e.aftd-part", True),
    ("part", False), ("a.partial", False),
])
def test_temporary_names(name: str, temporary: bool) -> None:
    assert is_temporary(name) is temporary


def test_candidates_are_regular_files_matching_the_pattern() -> None:
    def info(name: str, **kw: bool) -> FileInfo:
        return FileInfo(path=f"in/{name}", size=1, mtime=1.0, is_dir=False, **kw)

    assert is_candidate(info("a.csv"), "*.csv")
    assert not is_candidate(info("a.CSV"), "*.csv")  # the glob is case-sensitive
    assert not is_candidate(info("a.csv", is_link=True), "*")
    assert not is_candidate(info("a.csv", special=True), "*")
    assert not is_candidate(FileInfo("in/d", 0, 1.0, True), "*")


def test_a_version_is_path_size_and_every_bit_of_the_mtime() -> None:
    a = file_key("v", "in/a", 10, 1_700_000_000.123456)
    assert a != file_key("v", "in/a", 10, 1_700_000_000.123457)
    assert a != file_key("v", "in/a", 11, 1_700_000_000.123456)
    assert a != file_key("w", "in/a", 10, 1_700_000_000.123456)
    assert key_digest(a) == key_digest(file_key("v", "in/a", 10, 1_700_000_000.123456))
    assert 0 <= key_digest(a) < 2**64


def test_move_keeps_the_place_below_the_watched_directory() -> None:
    cfg = WatchTriggerConfig(name="w", type="watch", script="s", vfs="v", path="out/",
                             after="move", move_to="done", recursive=True)
    assert move_target(cfg, "out/a.csv") == "done/a.csv"
    assert move_target(cfg, "out/sub/a.csv") == "done/sub/a.csv"
    root = cfg.model_copy(update={"path": ""})
    assert move_target(root, "x/a.csv") == "done/x/a.csv"
