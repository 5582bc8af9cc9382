"""Tree copies through the real daemon: symlink loops and links out of the root are skipped and
reported, ``on_error`` decides between stopping and carrying on, and the daemon logs how it
confines local paths."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.daemon import Api, DaemonProcess

SCRIPTS = {
    "tree_links": '''
async def main(job):
    src, dst = job.vfs("src"), job.vfs("dst")
    res = await src.copy_to("tree", dst, job.params["dst_dir"],
                            follow_symlinks=bool(job.params.get("follow", False)))
    job.log.info("copy_result", result=res.as_dict())
    return 0
''',
    "copy_continue": '''
async def main(job):
    res = await job.vfs("src").copy_to("batch", job.vfs("dst"), "", on_error="continue")
    job.log.info("copy_result", result=res.as_dict())
    # The script decides whether failed files fail the job.
    return 0 if res.ok or job.params.get("tolerate") else 4
''',
    "copy_stop": '''
from aftd.errors import TransferError

async def main(job):
    try:
        await job.vfs("src").copy_to("batch", job.vfs("dst"), "stopped", transfers=1)
    except TransferError as exc:
        job.log.error("copy_stopped", delivered=exc.delivered)
        raise
    return 0
''',
}


def config(src: Path, dst: Path) -> str:
    return f"""
[vfs.src]
type = "local"
root = "{src}"
[vfs.dst]
type = "local"
root = "{dst}"
"""


async def run_job(api: Api, script: str, params: dict[str, Any]) -> tuple[dict[str, Any],
                                                                           list[dict[str, Any]]]:
    status, body = await api.trigger(script, params)
    assert status == 201, body
    job = await api.wait_job(body["jobId"])
    _, log = await api.request("GET", f"/v1/jobs/{body['jobId']}/log")
    return job, log["lines"]


def event(lines: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(line for line in lines if line["event"] == name)


async def test_tree_with_symlink_loop_and_link_out_of_root_succeeds(
        make_daemon: Callable[..., Any], tmp_path: Path) -> None:
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for d in (src / "tree" / "sub", dst, outside):
        d.mkdir(parents=True)
    (outside / "secret.txt").write_text("outside the root")
    (src / "tree" / "a.txt").write_text("a")
    (src / "tree" / "sub" / "b.txt").write_text("b")
    (src / "tree" / "loop").symlink_to(".")
    (src / "tree" / "sub" / "up").symlink_to("..")
    (src / "tree" / "out").symlink_to(outside)
    (src / "tree" / "inside").symlink_to("sub")
    # The fallback resolver is forced here; the other tests use openat2 where the kernel has it.
    d: DaemonProcess = await make_daemon(scripts=SCRIPTS, extra_config=config(src, dst),
                                         env={"AFTD_VFS_RESOLVE": "openat_walk"})
    api = Api(d)
    try:
        job, lines = await run_job(api, "tree_links", {"dst_dir": "plain"})
        assert job["status"] == "succeeded", job
        result = event(lines, "copy_result")["result"]
        assert result["files"] == 2
        assert sorted(s["path"] for s in result["skipped_links"]) == [
            "tree/inside", "tree/loop", "tree/out", "tree/sub/up"]
        assert {line["path"] for line in lines if line["event"] == "copy_symlink_skipped"} == {
            "tree/inside", "tree/loop", "tree/out", "tree/sub/up"}

        job, lines = await run_job(api, "tree_links", {"dst_dir": "followed", "follow": True})
        assert job["status"] == "succeeded", job
        result = event(lines, "copy_result")["result"]
        reasons = {s["path"]: s["reason"] for s in result["skipped_links"]}
        assert set(reasons) == {"tree/loop", "tree/sub/up", "tree/inside/up", "tree/out"}
        assert "outside the VFS root" in reasons["tree/out"]
        assert "loop" in reasons["tree/loop"]
        assert result["files"] == 3  # a.txt, sub/b.txt and inside/b.txt
    finally:
        await api.close()
    got = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert got == ["followed/tree/a.txt", "followed/tree/inside/b.txt",
                   "followed/tree/sub/b.txt", "plain/tree/a.txt", "plain/tree/sub/b.txt"]
    assert '"method": "openat_walk"' in d.logs() and '"vfs_confinement"' in d.logs()


async def test_on_error_continue_and_stop_through_the_daemon(
        make_daemon: Callable[..., Any], tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "batch").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (src / "batch" / name).write_text(name)
    (dst / "batch" / "b.txt").mkdir(parents=True)  # a directory in the way of one file
    expect_failed = {"batch/b.txt"}
    if os.geteuid() != 0:  # root reads any file; elsewhere an unreadable one fails too
        (src / "batch" / "d.txt").chmod(0)
        expect_failed.add("batch/d.txt")
    (dst / "stopped" / "batch").mkdir(parents=True)
    (dst / "stopped" / "batch" / "c.txt").write_text("already there")
    d: DaemonProcess = await make_daemon(scripts=SCRIPTS, extra_config=config(src, dst))
    api = Api(d)
    try:
        job, lines = await run_job(api, "copy_continue", {})
        assert (job["status"], job["exitCode"]) == ("failed", 4)
        result = event(lines, "copy_result")["result"]
        assert {f["path"] for f in result["failed"]} == expect_failed
        assert "directory is in the way" in result["failed"][0]["error"]
        assert result["files"] == 4 - len(expect_failed)
        job, _ = await run_job(api, "copy_continue", {"tolerate": True})
        assert job["status"] == "succeeded", job

        job, lines = await run_job(api, "copy_stop", {})
        assert job["status"] == "failed"
        assert "2 of 4 files already delivered" in job["error"], job["error"]
        assert event(lines, "copy_stopped")["delivered"] == ["stopped/batch/a.txt",
                                                            "stopped/batch/b.txt"]
    finally:
        await api.close()
    assert (dst / "batch" / "a.txt").read_text() == "a.txt"
    assert (dst / "stopped" / "batch" / "c.txt").read_text() == "already there"
    assert '"method": "openat2"' in d.logs() or '"method": "openat_walk"' in d.logs()
