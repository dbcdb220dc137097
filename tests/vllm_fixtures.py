"""Helpers for the real-vLLM end-to-end tier: tiny models, `graph run` on CPU, greedy requests, metrics.

Facts this relies on (docs/engines.md, "vLLM"; measured with vLLM 0.32.0 CPU): requests with
``return_token_ids`` answer ``choices[0].token_ids``; KV pulled over NIXL shows on
the decode as ``vllm:nixl_xfer_time_seconds_count``; the encoder cache lands in
``<shared_storage_path>/<mm_hash>/encoder_cache.safetensors``.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any

from tests.e2e import ROOT, RunningGraph, http_json, start_graph

#: Three engines importing vLLM at once on 2 busy cores took up to 320 s (docs/engines.md, "vLLM").
READY_TIMEOUT_S = float(os.environ.get("SERVEGRAPH_VLLM_READY_TIMEOUT", "600"))
MAX_MODEL_LEN = 2048
TEXT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MM_MODEL = "llava-hf/llava-1.5-7b-hf"


def missing_vllm() -> str | None:
    """Why the real-vLLM tier can't run in this interpreter, or None.

    ``find_spec`` instead of ``import vllm``: the import alone takes 10-35 s here, and a
    broken install should fail the tests loudly rather than skip them.
    """
    for module in ("vllm", "nixl", "torchvision"):
        if importlib.util.find_spec(module) is None:
            return (f"module '{module}' is not installed in {sys.executable}; "
                    f"install the vLLM CPU build with `bash scripts/setup-vllm.sh {sys.prefix}`")
    return None


def tiny_models() -> pathlib.Path:
    """The tiny Llama and Llava (built once; reused while the builder's stamp matches)."""
    folder = pathlib.Path(os.environ.get("SERVEGRAPH_MODELS_DIR") or
                          pathlib.Path(tempfile.gettempdir()) / "servegraph-tiny-models")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_tiny_models.py"), str(folder)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building the tiny models failed:\n{done.stdout}\n{done.stderr}")
    return folder


#: Put on the engines' PYTHONPATH: its sitecustomize keeps vLLM's NIXL agents from spinning a core each.
ENGINE_SITE = ROOT / "scripts" / "engine_site"


def start_vllm_graph(pipeline: str, model: pathlib.Path, workdir: pathlib.Path, *sets: str) -> RunningGraph:
    """`graph run PIPELINE --device cpu --model MODEL` with every engine at ``MAX_MODEL_LEN``."""
    args = ["--device", "cpu", "--model", str(model)]
    for s in sets:
        args += ["--set", s]
    path = os.pathsep.join(p for p in (str(ENGINE_SITE), os.environ.get("PYTHONPATH", "")) if p)
    return start_graph(pipeline, workdir, *args, ready_timeout=READY_TIMEOUT_S, extra_env={"PYTHONPATH": path})


def engine_sets(*nodes: str) -> list[str]:
    """``--set`` values giving engine nodes one replica, one rank and a small context each."""
    out = []
    for node in nodes:
        out += [f"{node}.replicas=1", f"{node}.tp=1", f"{node}.gpus=1", f"{node}.max_model_len={MAX_MODEL_LEN}"]
    return out


def greedy(max_tokens: int) -> dict[str, Any]:
    """Sampling fields that make the output a pure function of the prompt."""
    return {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "return_token_ids": True}


def complete(base_url: str, model: str, prompt: str, max_tokens: int = 24) -> dict[str, Any]:
    """POST /v1/completions greedily; returns the JSON answer (asserts 200)."""
    status, data = http_json("POST", base_url + "/v1/completions",
                             {"model": model, "prompt": prompt, **greedy(max_tokens)}, timeout=300)
    assert status == 200, f"{base_url}: HTTP {status}: {data}"
    return data


def chat_with_image(base_url: str, model: str, png: bytes, text: str, max_tokens: int = 16) -> dict[str, Any]:
    """POST /v1/chat/completions with one image (data URL) and a question, greedily."""
    status, data = http_json("POST", base_url + "/v1/chat/completions",
                             {"model": model, "messages": image_messages(png, text), **greedy(max_tokens)},
                             timeout=300)
    assert status == 200, f"{base_url}: HTTP {status}: {data}"
    return data


def image_messages(png: bytes, text: str) -> list[dict[str, Any]]:
    """One user message: the image as a data URL, then the text."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def make_image(seed: int) -> bytes:
    """A 96x72 PNG whose colours and stripes depend on ``seed`` (different seeds, different pixels)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (96, 72), ((seed * 97) % 256, (seed * 57 + 80) % 256, (seed * 31 + 160) % 256))
    draw = ImageDraw.Draw(img)
    for i in range(seed % 5 + 2):
        x = (seed * 13 + i * 23) % 90
        draw.rectangle([x, 0, x + 6, 71], fill=((i * 70 + seed * 11) % 256, (255 - seed * 19) % 256, i * 40 % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def token_ids(answer: dict[str, Any]) -> list[int]:
    """The generated token ids of a non-streamed answer."""
    ids = answer["choices"][0].get("token_ids")
    assert ids, f"no token_ids in {answer}"
    return list(ids)
