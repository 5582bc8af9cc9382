"""Schemathesis fuzzes the live daemon from its own ``/v1/openapi.json``.

Every check runs (no 5xx; status codes, content types, headers and bodies as documented;
schema-violating requests refused; auth enforced) except ``positive_data_acceptance``: a schema
cannot say everything the API checks (the list form of ``params`` must not name a parameter
twice), so some schema-valid requests are rightly refused with 400.

The run is bounded (a fixed number of examples per operation, a fixed seed so CI is
reproducible; set ``AFTD_FUZZ_SEED`` to explore) and takes about 15 s here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.api.conftest import REPORTER
from tests.api.rawclient import assert_no_traceback, call
from tests.fixtures.daemon import API_KEY, DaemonProcess

MAX_EXAMPLES = "40"



def _job_with_a_report(d: DaemonProcess) -> None:
    d.write_script("reporter", REPORTER)
    status, job = call(d, "POST", "/v1/jobs", {"scriptId": "reporter"})
    assert status == 201, job
    deadline = time.monotonic() + 60
    while True:
        job = call(d, "GET", f"/v1/jobs/{job['jobId']}")[1]
        if job["status"] not in ("queued", "running") and (job.get("report") or {}).get(
                "attempts"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "succeeded", job
    assert job["report"]["state"] == "pending", job


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schemathesis_finds_nothing(hostile: DaemonProcess, tmp_path: Path) -> None:
    _job_with_a_report(hostile)
    seed = os.environ.get("AFTD_FUZZ_SEED", "20261130")
    cmd = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
           "run", f"{hostile.url}/v1/openapi.json",
           "--header", f"X-API-Key: {API_KEY}", "--tls-verify", str(hostile.cert),
           "--checks", "all", "--exclude-checks", "positive_data_acceptance",
           "--max-examples", MAX_EXAMPLES, "--seed", seed, "--workers", "1",
           "--request-timeout", "30", "--generation-database", "none", "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "COLUMNS": "200"}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=280, check=False)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-20_000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected and tested, report[-3000:]
    # Every operation was exercised (the document's own URL is not among them).
    assert int(tested[1]) == int(selected[2]) >= 9, report[-3000:]
    assert_no_traceback(hostile)
