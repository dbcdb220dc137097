"""--tokenizer: a real ``tokenizers`` tokenizer.json and jinja chat template from a model folder."""

from __future__ import annotations

import json

import pytest

from tests.test_mock_api import post

tokenizers = pytest.importorskip("tokenizers", reason="--tokenizer needs the 'tokenizers' package")

from nodes.mock.launch import MockProcess  # noqa: E402
from nodes.mock.tokenizer import MEDIA_SENTINEL, HFTokenizer, encode_with_media  # noqa: E402

TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
            "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["the quick brown fox jumps over the lazy dog while a model serves tokens to many users",
            "prefill computes the cache and decode writes one token at a time for every request"] * 50
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    folder = tmp_path_factory.mktemp("tiny-model")
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"}))
    return folder


def test_render_and_media_placeholders(model_dir):
    tok = HFTokenizer(str(model_dir))
    text = tok.render_chat([{"role": "user", "content": "the fox" + MEDIA_SENTINEL + "jumps"}])
    assert text.startswith("<s><|user|>\nthe fox") and text.endswith("<|assistant|>\n")
    ids = encode_with_media(tok, text, [[7, 7, 7]])
    assert ids.count(7) >= 3 and tok.encode("<s>")[0] == ids[0]
    assert all(tok.decode([i]).strip().isalpha() for i in tok.output_ids[:50])


@pytest.mark.e2e_mock
def test_mock_serves_with_the_real_tokenizer(model_dir):
    from tokenizers import Tokenizer

    real = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    messages = [{"role": "user", "content": "the quick brown fox"}]
    with MockProcess(["--served-model-name", "m", "--tokenizer", str(model_dir), "--speedup", "100"]) as m:
        status, out = post(m.url + "/v1/chat/completions",
                           {"model": "m", "messages": messages, "max_tokens": 6, "return_token_ids": True})
        assert status == 200, out
        rendered = "<s><|user|>\nthe quick brown fox</s>\n<|assistant|>\n"
        assert out["prompt_token_ids"] == real.encode(rendered, add_special_tokens=False).ids
        assert out["usage"]["prompt_tokens"] == len(out["prompt_token_ids"])
        content = out["choices"][0]["message"]["content"]
        assert content == real.decode(out["choices"][0]["token_ids"]) and content.strip()
        import urllib.request

        req = urllib.request.Request(m.url + "/v1/chat/completions", data=json.dumps(
            {"model": "m", "messages": messages, "max_tokens": 6, "stream": True}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            chunks = [json.loads(line[6:]) for line in resp if line.startswith(b"data: {")]
        streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert streamed == content


def test_missing_tokenizer_folder_fails_clearly(tmp_path):
    with pytest.raises(RuntimeError, match="no tokenizer.json"):
        MockProcess(["--tokenizer", str(tmp_path)], ready_timeout_s=10).start()
