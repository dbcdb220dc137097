"""The tiny local models that the real-vLLM tests serve: built, deterministic, well-formed.

Runs scripts/build_tiny_models.py with the current interpreter, so it needs
torch + transformers (the vLLM venv made by scripts/setup-vllm.sh); skipped
with a printed reason elsewhere. Set SERVEGRAPH_MODELS_DIR to a folder to
reuse its build as a cache (the test still rebuilds into a tmp dir once to
check determinism).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e_vllm

_MISSING = [m for m in ("torch", "transformers", "tokenizers") if importlib.util.find_spec(m) is None]
if _MISSING:
    _REASON = (
        f"needs {', '.join(_MISSING)} (run with the vLLM venv: scripts/setup-vllm.sh VENV, "
        "then VENV/bin/python -m pytest tests/test_tiny_models.py)"
    )
    print(f"SKIP tests/test_tiny_models.py: {_REASON}", file=sys.stderr)
    pytest.skip(_REASON, allow_module_level=True)

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_tiny_models.py"


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_tiny_models", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


btm = _load_builder()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The models, from SERVEGRAPH_MODELS_DIR when set (built there if needed), else a tmp dir."""
    cache = os.environ.get("SERVEGRAPH_MODELS_DIR")
    outdir = Path(cache) if cache else tmp_path_factory.mktemp("models")
    return btm.build_all(outdir)


def test_build_is_byte_for_byte_deterministic(models, tmp_path):
    """A build by the script in a fresh interpreter gives files with the same sha256 as the first."""
    again = tmp_path / "again"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(again)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, folder in models.items():
        first = btm.file_hashes(folder)
        second = btm.file_hashes(again / name)
        assert "model.safetensors" in first and "tokenizer.json" in first, first
        assert first == second, f"{name}: files differ between two builds"


def test_second_run_skips_and_detects_tampering(models, tmp_path, capsys):
    """An intact stamped build is reused; a changed file makes it rebuild."""
    out = tmp_path / "m"
    btm.build_all(out)
    capsys.readouterr()
    btm.build_all(out)
    assert capsys.readouterr().out.count("up to date") == len(btm.BUILDERS)
    (out / "llama" / "config.json").write_text("{}")
    assert not btm.is_complete(out / "llama", btm.build_hash())
    btm.build_all(out)
    assert "llama: built" in capsys.readouterr().out
    assert btm.file_hashes(out / "llama") == btm.file_hashes(models["llama"])


def test_llama_config(models):
    cfg = json.loads((models["llama"] / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (256, 4, 2)
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 64  # vLLM CPU rejects head_dim 16
    assert cfg["num_hidden_layers"] == 2
    assert 1000 <= cfg["vocab_size"] <= 2048


def test_llava_config_and_weights(models):
    from safetensors import safe_open

    folder = models["llava"]
    cfg = json.loads((folder / "config.json").read_text())
    llama = json.loads((models["llama"] / "config.json").read_text())
    vision = cfg["vision_config"]
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert (vision["hidden_size"], vision["num_hidden_layers"], vision["num_attention_heads"]) == (64, 2, 2)
    assert (vision["image_size"] // vision["patch_size"]) ** 2 == 16
    assert cfg["text_config"]["vocab_size"] == llama["vocab_size"] + 1
    assert cfg["image_token_index"] == llama["vocab_size"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    vision_keys = [k for k in keys if "vision_tower" in k]
    assert vision_keys, keys
    # vLLM's CLIP loader reads vision_tower.vision_model.*; anything else stays random there.
    assert all(".vision_model." in k for k in vision_keys), vision_keys[:5]


def test_llava_language_model_is_the_llama(models):
    """The Llava's text weights are the tiny Llama's (plus one row for <image>)."""
    from safetensors import safe_open

    with safe_open(str(models["llama"] / "model.safetensors"), "pt") as f:
        llama_embed = f.get_tensor("model.embed_tokens.weight")
        llama_q = f.get_tensor("model.layers.1.self_attn.q_proj.weight")
    with safe_open(str(models["llava"] / "model.safetensors"), "pt") as f:
        embed_key = next(k for k in f.keys() if k.endswith("embed_tokens.weight"))
        q_key = next(k for k in f.keys() if k.endswith("layers.1.self_attn.q_proj.weight") and "vision" not in k)
        llava_embed = f.get_tensor(embed_key)
        llava_q = f.get_tensor(q_key)
    assert llava_embed.shape[0] == llama_embed.shape[0] + 1
    assert (llava_embed[: llama_embed.shape[0]] == llama_embed).all()
    assert (llava_q == llama_q).all()


@pytest.mark.parametrize("name", ["llama", "llava"])
def test_tokenizer_round_trips_and_has_chat_template(models, name):
    from transformers import AutoTokenizer

    folder = models[name]
    tok = AutoTokenizer.from_pretrained(folder)
    text = "Hello, how are you today? The prefill sends 128 tokens to decode: ok!"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(text) // 2, "BPE merges are missing: almost one token per byte"
    assert tok.decode(ids) == text
    assert tok(text)["input_ids"][0] == tok.bos_token_id
    assert json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template")
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|user|>\nhi</s>\n<|assistant|>\n"


def test_llava_processor_expands_the_image_to_16_tokens(models):
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(models["llava"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "<|user|>\n<image>\nwhat is it?</s>\n<|assistant|>\n"
    image = Image.new("RGB", (80, 60), (200, 30, 30))
    batch = processor(images=image, text=prompt, return_tensors="pt")
    assert tuple(batch["pixel_values"].shape) == (1, 3, 56, 56)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((batch["input_ids"] == image_id).sum()) == 16
