"""The gateway's sidecar client while the sidecar is gone (killed: every stream fails at once,
shared memory refused): every call fails fast, no stream leaves grpc's request-feeding task
pending (destroyed by the collector, logged as an error, before), and the refused shared memory
is logged once, not once a call. In its own process: tests/helpers/sidecar_gone.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CALLS = 5


def test_a_gone_sidecar_leaves_no_stream_half_open_and_one_warning(tmp_path: Path) -> None:
    tests = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "helpers.sidecar_gone", str(tmp_path), str(CALLS)],
                          cwd=tests, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"failed": CALLS, "pending_feeders": 0, "shm_warnings": 1}, seen
    assert "Task was destroyed but it is pending" not in done.stderr
