#!/usr/bin/env bash
# Install NVIDIA Dynamo (the peer bench/frontend_vs_dynamo.py races) into its OWN virtualenv:
# it must not share one with servegraph. Recipe: docs/engines.md, section "NVIDIA Dynamo":
# the runtime, then ai-dynamo without deps, then its declared deps except aisimulate.
# Usage: scripts/setup-dynamo.sh [VENV]   (default: .venv-dynamo). Idempotent.
set -euo pipefail
VENV="${1:-.venv-dynamo}"
VERSION="1.6.1"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if "$VENV/bin/python" -c "import dynamo.frontend, dynamo.mocker" 2>/dev/null; then
    echo "[setup-dynamo] ai-dynamo $VERSION already in $VENV"; exit 0
fi
quiet() { "$@" 2>&1 | grep -v "^WARNING: Location 'file://" || true; }
echo "[setup-dynamo] installing ai-dynamo-runtime $VERSION into $VENV"
quiet "${PIP[@]}" install "ai-dynamo-runtime==$VERSION"
quiet "${PIP[@]}" install --no-deps "ai-dynamo==$VERSION"
quiet "${PIP[@]}" install aiohttp certifi 'kubernetes<33' msgspec prometheus-client pyzmq redis tqdm transformers \
    typing-extensions zstandard pyyaml
"$VENV/bin/python" -c "import dynamo.frontend, dynamo.mocker" || { echo "[setup-dynamo] import failed" >&2; exit 1; }
echo "[setup-dynamo] ok: $VENV"
