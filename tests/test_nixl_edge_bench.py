"""bench/nixl_edge.py itself: its --profile runs for any sizes, each of our paths is CRC-checked, and
both processes print the UCX settings their agents ran with."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_profile_of_sizes_above_64_mib_checks_every_path_and_prints_ucx_settings() -> None:
    """Only sizes above 64 MiB (``--profile`` once took max() of none of them); a whole array
    (ours, ours/prep) and a block case (ours, ours/contig, ours/prep, ours/slice): six CRC'd sends."""
    pytest.importorskip("nixl._api", reason="the bench needs NIXL: install nixl-cu12==1.5.1 and nixl==1.5.1")
    env = {**os.environ, "UCX_LOG_LEVEL": "warn"}  # UCX's default level: a setting both sides must print
    done = subprocess.run(
        [sys.executable, "bench/nixl_edge.py", "--device", "cpu", "--sizes", "65M,2x33M", "--repeat", "1", "--profile"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^profile 65M ours/prep \(us, median\): describe", out, re.M), out[-3000:]
    assert re.search(r"^profile 2x33M ours/slice \(us, median\): describe", out, re.M), out[-3000:]
    for side in ("receiver", "sender"):
        assert re.search(rf"^UCX settings of the {side}'s agents: .*UCX_LOG_LEVEL=warn", out, re.M), out[-3000:]
    assert "CRC-checked transfers: 6 of 6 intact, 0 failed" in out, out[-3000:]
