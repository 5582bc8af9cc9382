"""Loading a script's ``main``: compiled once per file version, run in a fresh module per job."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aftd.scripts.loader import ScriptError, ScriptLoader

COUNTER = """
calls = []


async def main(job):
    calls.append(job)
    return {version}, len(calls)
"""


def _write(path: Path, text: str, bump_ns: int = 0) -> None:
    path.write_text(text)
    if bump_ns:  # a distinct mtime even on a coarse clock
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_ns))


async def test_each_load_is_a_fresh_module_of_the_current_file(tmp_path: Path) -> None:
    script = tmp_path / "count.py"
    _write(script, COUNTER.format(version=1))
    loader = ScriptLoader(tmp_path)
    info = loader.find(script_id="count")
    first, second = loader.load_main(info), loader.load_main(info)
    assert await first(None) == (1, 1)
    assert await second(None) == (1, 1)  # module state is not shared between jobs
    assert await first(None) == (1, 2)
    _write(script, COUNTER.format(version=2), bump_ns=1_000_000)
    assert await loader.load_main(loader.find(script_id="count"))(None) == (2, 1)
    _write(script, COUNTER.format(version=33), bump_ns=2_000_000)  # another size too
    assert await loader.load_main(loader.find(script_id="count"))(None) == (33, 1)


def test_a_script_broken_by_an_edit_fails_to_load_naming_the_line(tmp_path: Path) -> None:
    script = tmp_path / "edit.py"
    _write(script, COUNTER.format(version=1))
    loader = ScriptLoader(tmp_path)
    loader.load_main(loader.find(script_id="edit"))
    _write(script, "async def main(job):\n    return (\n", bump_ns=1_000_000)
    with pytest.raises(ScriptError, match=r"SyntaxError: .*line 2"):
        loader.load_main(loader.find(script_id="edit"))
