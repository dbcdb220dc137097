"""state.json in the workdir: what the supervisor is doing, for people and tests."""

from __future__ import annotations

import json
import os
from typing import Any


def write_state(path: str, state: dict[str, Any]) -> None:
    """Replace ``path`` with ``state`` as JSON; readers never see a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def read_state(path: str) -> dict[str, Any]:
    """The state a supervisor wrote (raises OSError if there is none yet)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
