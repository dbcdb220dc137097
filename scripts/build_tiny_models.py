#!/usr/bin/env python3
"""Build tiny random models that the real vLLM CPU build can serve, without a hub.

Usage: python scripts/build_tiny_models.py OUTDIR [--force]

Writes two Hugging Face model folders:

* ``OUTDIR/llama``: a random Llama (hidden 256, 4 heads so head_dim 64 — vLLM's
  CPU attention rejects 16 —, 2 KV heads, 2 layers) with a byte-level BPE
  tokenizer trained on a fixed text built into this file and a chat template.
* ``OUTDIR/llava``: a tiny Llava: a CLIP vision tower (hidden 64, 2 layers,
  2 heads, 56x56 images, patch 14 -> 16 image tokens) in front of that same
  Llama, whose vocabulary gains one ``<image>`` token.

Everything is seeded and written in a fixed order, so two builds are
byte-for-byte identical for the same versions of this script, torch,
transformers and tokenizers. A stamp file per model records a build hash
over those and the sha256 of every file; a later run whose stamp matches and
whose files are intact does nothing.

Needs torch, transformers (5.x) and tokenizers: run it with the vLLM venv's
python (scripts/setup-vllm.sh).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STAMP_NAME = "servegraph-build.json"
SEED = 1234
VOCAB_SIZE = 1536
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]

# The text the tokenizer learns from: fixed, so the vocabulary is fixed.
# Plain English about serving graphs, plus digits and punctuation so that any
# ASCII prompt tokenizes into known merges rather than single bytes only.
_CORPUS_LINES = [
    "A serving graph declares a frontend, a processor, an encoder, a prefill and a decode node.",
    "The frontend accepts chat completions and completions over HTTP and streams tokens back.",
    "Prefill computes the key value cache for the prompt; decode generates one token at a time.",
    "The key value cache moves from the prefill engine to the decode engine over NIXL.",
    "An encoder turns an image into embeddings; the language model reads them as tokens.",
    "The compiler lowers one graph to local processes, to Kubernetes manifests or to Slurm jobs.",
    "Every node runs as a plain process with an explicit command line and environment.",
    "The quick brown fox jumps over the lazy dog while the model writes a short story.",
    "Once upon a time there was a small model that answered questions about the weather.",
    "The user asks a question and the assistant answers it in a few clear sentences.",
    "Hello, how are you today? I am fine, thank you. What can I do for you?",
    "Please summarize the following text in one sentence and list three key points.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 16 32 64 128 256 512 1024 2048 4096.",
    "Punctuation: . , ; : ! ? ' \" ( ) [ ] { } < > / \\ | - _ + = * & ^ % $ # @ ~ `",
    "def main(argv: list[str]) -> int:\n    return run(parse(argv))\n",
    "system user assistant image text content role message token prompt answer",
]
_SYLLABLES = (
    "ka ri to ne mu sa lo vi pe da gu zo hen tar mil qua sto bre fin pol "
    "dex ran ulm ost ing ed er ly tion ment able ous ist al ic ive"
).split()


def _pseudo_text(lines: int = 400, words: int = 12, seed: int = SEED) -> list[str]:
    """Seeded pseudo-words: enough distinct pairs for BPE to reach VOCAB_SIZE.

    random.Random with an int seed gives the same stream on every Python 3.
    """
    import random

    rng = random.Random(seed)
    return [
        " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(words))
        for _ in range(lines)
    ]


CORPUS = "\n".join(_CORPUS_LINES * 8 + _pseudo_text())

# A ChatML-style template. Content may be a string or an OpenAI-style list of
# parts; an image part becomes the model's image placeholder.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}{{ '<image>\\n' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '</s>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

LLAMA_SHAPE: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "max_position_embeddings": 4096,
    # Wider than the usual 0.02 so greedy choices are decisive (large logit
    # gaps): P/D-vs-aggregated comparisons then don't hinge on rounding.
    "initializer_range": 0.2,
}
CLIP_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 56,
    "patch_size": 14,
    "projection_dim": 64,
}
IMAGE_TOKENS = (CLIP_SHAPE["image_size"] // CLIP_SHAPE["patch_size"]) ** 2  # 16


def build_hash() -> str:
    """Hash of everything that decides the bytes written: this file and the library versions."""
    import tokenizers
    import torch
    import transformers

    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    for version in (torch.__version__, transformers.__version__, tokenizers.__version__):
        h.update(version.encode())
    return h.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in ``folder`` except the stamp, by relative path, sorted."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STAMP_NAME
    }


def is_complete(folder: Path, expected_hash: str) -> bool:
    """True when ``folder`` has a stamp with ``expected_hash`` and every stamped file is intact."""
    stamp = folder / STAMP_NAME
    if not stamp.is_file():
        return False
    try:
        data = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return False
    return data.get("build_hash") == expected_hash and data.get("files") == file_hashes(folder)


def _seed() -> None:
    import torch

    torch.manual_seed(SEED)


def train_tokenizer(extra_special: list[str]):
    """Train a byte-level BPE on CORPUS and wrap it as a transformers fast tokenizer.

    Args:
        extra_special: added special tokens (e.g. ``["<image>"]``), appended after the BPE vocab.

    Returns:
        A ``PreTrainedTokenizerFast`` with bos/eos/unk/pad and the chat template set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=LLAMA_SHAPE["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    if extra_special:
        fast.add_special_tokens({"additional_special_tokens": extra_special})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _llama_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
        **LLAMA_SHAPE,
    )


def _llama_model(tokenizer):
    """A seeded random LlamaForCausalLM sized for ``tokenizer``."""
    from transformers import LlamaForCausalLM

    _seed()
    model = LlamaForCausalLM(_llama_config(tokenizer))
    model.generation_config.do_sample = False
    return model.eval()


def build_llama(out: Path) -> None:
    """Write the tiny Llama (weights, config, tokenizer, chat template) to ``out``."""
    tokenizer = train_tokenizer([])
    model = _llama_model(tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    # save_jinja_files=False keeps the chat template inside tokenizer_config.json,
    # where non-transformers readers (Rust frontends) look for it.
    tokenizer.save_pretrained(out, save_jinja_files=False)


def _clip_keys_for_vllm(state: dict) -> dict:
    """Rename the vision tower's keys to the layout vLLM's CLIP loader reads.

    transformers 5.x's CLIPVisionModel holds ``embeddings``/``encoder``/... at
    its top level, so a Llava saves ``model.vision_tower.embeddings.*``; vLLM
    loads ``vision_tower.vision_model.embeddings.*`` (the transformers 4.x
    layout) and would silently leave the tower random otherwise.
    """
    prefix = "model.vision_tower."
    nested = prefix + "vision_model."
    renamed = {}
    for key, tensor in state.items():
        if key.startswith(prefix) and not key.startswith(nested):
            key = nested + key[len(prefix):]
        renamed[key] = tensor
    return renamed


def build_llava(out: Path) -> None:
    """Write the tiny Llava (CLIP tower + the tiny Llama + ``<image>``) and its processor to ``out``."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    base_tokenizer = train_tokenizer([])
    llama = _llama_model(base_tokenizer)
    tokenizer = train_tokenizer([IMAGE_TOKEN])
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id != len(base_tokenizer):
        raise RuntimeError(f"expected {IMAGE_TOKEN} to be appended as id {len(base_tokenizer)}, got {image_token_id}")

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**CLIP_SHAPE),
        text_config=_llama_config(tokenizer),
        image_token_index=image_token_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=IMAGE_TOKENS,
        tie_word_embeddings=False,
    )
    _seed()
    model = LlavaForConditionalGeneration(config).eval()
    # The language model is the tiny Llama itself, plus one seeded row for <image>.
    with torch.no_grad():
        lm = model.model.language_model
        src = llama.model
        for name, param in src.state_dict().items():
            target = lm.state_dict()[name]
            target[: param.shape[0]].copy_(param)
        model.lm_head.weight[: llama.lm_head.weight.shape[0]].copy_(llama.lm_head.weight)
    state = _clip_keys_for_vllm(model.state_dict())
    model.save_pretrained(out, state_dict=state, safe_serialization=True)

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": CLIP_SHAPE["image_size"]},
        crop_size={"height": CLIP_SHAPE["image_size"], "width": CLIP_SHAPE["image_size"]},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=CLIP_SHAPE["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out, save_jinja_files=False)
    # The processor writes its template to chat_template.jinja only; put it in
    # tokenizer_config.json too, as for the Llama.
    tokenizer.save_pretrained(out, save_jinja_files=False)


BUILDERS = {"llama": build_llama, "llava": build_llava}


def _write_stamp(folder: Path, digest: str) -> None:
    stamp = {"build_hash": digest, "files": file_hashes(folder)}
    (folder / STAMP_NAME).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")


def build_all(outdir: Path, force: bool = False) -> dict[str, Path]:
    """Build every tiny model under ``outdir`` unless an intact build with the same hash is there.

    A model is built in a temporary sibling folder and renamed into place, so an
    interrupted build never leaves a folder that looks complete.

    Args:
        outdir: parent folder; models land in ``outdir/<name>``.
        force: rebuild even when the stamp matches.

    Returns:
        Model name -> folder.
    """
    import shutil

    # Deterministic kernels and a single thread: the random init must not
    # depend on how many cores the machine has.
    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    digest = build_hash()
    outdir.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    for name, builder in BUILDERS.items():
        target = outdir / name
        if not force and is_complete(target, digest):
            print(f"[build_tiny_models] {name}: up to date ({target})")
            done[name] = target
            continue
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=outdir))
        tmp.chmod(0o755)
        try:
            builder(tmp)
            for path in tmp.rglob("*"):
                if path.is_file():
                    path.chmod(0o644)  # safetensors writes 0600; servers may run as another user
            _write_stamp(tmp, digest)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        print(f"[build_tiny_models] {name}: built in {time.monotonic() - start:.1f} s ({target})")
        done[name] = target
    return done


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: ``build_tiny_models.py OUTDIR [--force]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="folder that receives llama/ and llava/")
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    args = parser.parse_args(argv)
    try:
        import tokenizers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        print(
            f"build_tiny_models: {exc}. Run it with the vLLM venv's python "
            "(scripts/setup-vllm.sh VENV installs torch + transformers).",
            file=sys.stderr,
        )
        return 2
    build_all(args.outdir, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
