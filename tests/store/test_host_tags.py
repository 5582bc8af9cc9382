"""Host tags: a script's REQUIRES_TAGS (read without running it) and a trigger's hostTags; a
single host refuses a job it can never run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aftd.scripts.loader import ScriptError, ScriptLoader, requires_tags
from tests.fixtures.daemon import Api


@pytest.mark.parametrize(("source", "tags"), [
    ("REQUIRES_TAGS = ['vfs:archive', 'zone:eu']\n", ("vfs:archive", "zone:eu")),
    ("REQUIRES_TAGS = ('a',)\n", ("a",)),
    ("X = 1\n", ()),
])
def test_requires_tags_is_read_without_running(tmp_path: Path, source: str,
                                               tags: tuple[str, ...]) -> None:
    (tmp_path / "s.py").write_text(source + "raise SystemExit('never run')\n")
    assert requires_tags(ScriptLoader(tmp_path).find(script_id="s")) == tags


@pytest.mark.parametrize(("comment", "tags"), [
    ("// @requires_tags vfs:archive zone:eu\n", ("vfs:archive", "zone:eu")),
    ("// @requires_tags a, b\n// @requires_tags c\n", ("a", "b", "c")),
    ("// nothing needed\n", ()),
])
def test_syncjs_requires_tags_comment(tmp_path: Path, comment: str,
                                      tags: tuple[str, ...]) -> None:
    (tmp_path / "s.js").write_text("// A SyncJS script.\n" + comment + "Log('x');\n")
    assert requires_tags(ScriptLoader(tmp_path).find(script_id="s")) == tags


@pytest.mark.parametrize("source", ["REQUIRES_TAGS = 'vfs:archive'", "REQUIRES_TAGS = [1]",
                                    "REQUIRES_TAGS = ['bad tag']", "REQUIRES_TAGS = list()"])
def test_malformed_requires_tags_are_named(tmp_path: Path, source: str) -> None:
    (tmp_path / "s.py").write_text(source + "\n")
    with pytest.raises(ScriptError, match="REQUIRES_TAGS must be a literal list"):
        requires_tags(ScriptLoader(tmp_path).find(script_id="s"))


async def test_single_host_refuses_tags_it_lacks(make_daemon: Callable[..., Any]) -> None:
    d = await make_daemon(scripts={
        "archive": "REQUIRES_TAGS = ['vfs:archive']\nasync def main(job):\n    return 0\n",
        "plain": "async def main(job):\n    return 0\n"},
        extra_config='[host]\ntags = ["zone:eu"]\n')
    api = Api(d)
    try:
        status, body = await api.trigger("archive")
        assert status == 409 and body["error"]["code"] == "no_host_with_tags", body
        assert "vfs:archive" in body["error"]["message"]
        status, body = await api.request("POST", "/v1/jobs", json={
            "scriptId": "plain", "hostTags": ["zone:eu"]})
        assert status == 201 and body["hostTags"] == ["zone:eu"], body
        done = await api.wait_job(body["jobId"])
        assert done["status"] == "succeeded" and "host" not in done
        status, body = await api.request("POST", "/v1/jobs", json={
            "scriptId": "plain", "hostTags": "zone:eu"})
        assert status == 400 and "hostTags" in body["error"]["message"], body
    finally:
        await api.close()
