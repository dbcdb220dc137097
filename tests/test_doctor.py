"""`graph doctor` reports what it finds on this machine, as a person and a machine read it."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys


def test_doctor_json_matches_the_machine() -> None:
    out = subprocess.run([sys.executable, "-m", "compiler.cli", "doctor", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = {f["name"]: f for f in json.loads(out.stdout)}
    assert found["mock engine"]["ok"] is True
    assert found["vLLM"]["ok"] == (importlib.util.find_spec("vllm") is not None)
    assert found["kubectl (k8s: kustomize)"]["ok"] == (shutil.which("kubectl") is not None)
    for f in found.values():
        assert f["ok"] or f["fix"], f"{f['name']} is missing but says nothing about how to fix it"


def test_doctor_table_for_people() -> None:
    out = subprocess.run([sys.executable, "-m", "compiler.cli", "doctor"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "graph doctor" in out.stdout and "Traceback" not in out.stderr
