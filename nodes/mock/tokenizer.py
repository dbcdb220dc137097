"""Tokenizers for the mock: a fast simulated one (default) and a real ``tokenizers`` one.

Both turn chat messages into token ids the same way: the messages are rendered
through a chat template with a sentinel string where each media part sits; the
text between sentinels is encoded and each sentinel becomes the media's
placeholder ids (see ``nodes.mock.media``). Output tokens are drawn from
``output_ids``, a list of ids that decode to visible words.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any, Protocol, Sequence

#: Stands in for one media part in rendered chat text; never produced by a user.
MEDIA_SENTINEL = "\x00\x01media\x01\x00"

_SIM_WORDS = (
    "the a model serves graph token prefill decode cache block engine stream reply answer quick brown fox "
    "jumps over lazy dog river mountain cloud light signal packet router node edge frame image sound video "
    "green blue red amber silver golden quiet bright small large early late north south east west time "
    "story water stone fire wind garden window table letter number circle square line point shape color "
    "music voice word page book paper pencil lamp door road bridge tower city village forest field harbor "
    "ship train plane engine wheel gear spring summer autumn winter morning evening night day week year "
    "simple clear steady rapid gentle careful honest open calm warm cool fresh sharp soft strong "
    "builds moves carries reads writes keeps finds sends holds turns opens closes starts ends runs waits"
).split()
_SIM_SPECIALS = ("<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<unk>")
_SIM_TOKEN_RE = re.compile(r"<\|im_(?:start|end)\|>|\w+|[^\w\s]")


class Tokenizer(Protocol):
    """What the engine needs from a tokenizer."""

    vocab_size: int
    output_ids: list[int]

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""
        ...

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """Chat messages (content already flattened to text + sentinels) as prompt text."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``."""
        ...

    def stream_decoder(self) -> "StreamDecoder":
        """A fresh incremental detokenizer for one output stream."""
        ...


class StreamDecoder(Protocol):
    """Turns output ids into text one token at a time."""

    def step(self, token_id: int) -> str:
        """Text this token adds (may be empty while a multi-byte character is incomplete)."""
        ...


def encode_with_media(tok: Tokenizer, text: str, media_ids: list[list[int]]) -> list[int]:
    """Encode rendered text, replacing the i-th sentinel by ``media_ids[i]``."""
    if not media_ids:
        return tok.encode(text)
    pieces = text.split(MEDIA_SENTINEL)
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if piece:
            ids += tok.encode(piece)
        if i < len(media_ids):
            ids += media_ids[i]
    return ids


class SimTokenizer:
    """Deterministic word-level tokenizer; no files, microseconds per prompt.

    Ids 0-5 are special, then a fixed word list (the only ids the mock emits),
    and every other word or symbol maps to ``1024 + crc32(word) % (vocab - 1024 - media)``.
    The top ``MEDIA_RANGE`` ids are media placeholders.
    """

    vocab_size = 32768
    MEDIA_RANGE = 4096

    def __init__(self) -> None:
        self.media_base = self.vocab_size - self.MEDIA_RANGE
        self._ids = _WordIds(1024, self.media_base - 1024)
        for i, w in enumerate(_SIM_SPECIALS):
            self._ids[w] = i
        words: dict[int, str] = {}
        for i, w in enumerate(_SIM_WORDS, start=len(_SIM_SPECIALS)):
            self._ids.setdefault(w, i)
            words.setdefault(self._ids[w], w)
        self.output_ids = sorted(words)
        self._texts = {i: " " + w for i, w in words.items()}

    def encode(self, text: str) -> list[int]:
        """Word/punctuation tokens; ``<|im_start|>``/``<|im_end|>`` are special ids."""
        return list(map(self._ids.__getitem__, _SIM_TOKEN_RE.findall(text)))

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """ChatML-like: ``<|im_start|>role\\ncontent<|im_end|>`` per message, then the assistant turn."""
        parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
        parts.append("<|im_start|>assistant\n")
        return "".join(parts)

    def decode(self, ids: Sequence[int]) -> str:
        """Words with a leading space each; other ids as ``<id>``, specials dropped."""
        texts = self._texts
        try:
            return "".join(map(texts.__getitem__, ids))  # output ids: all words
        except KeyError:
            return "".join(texts.get(i) or ("" if i < len(_SIM_SPECIALS) else f" <{i}>") for i in ids)

    def stream_decoder(self) -> StreamDecoder:
        """Stateless: each output id is one word."""
        return _SimStream(self._texts)


class _WordIds(dict):
    """word -> id; an unknown word gets ``base + crc32(word) % span`` (remembered up to a bound)."""

    def __init__(self, base: int, span: int) -> None:
        super().__init__()
        self._base, self._span = base, span

    def __missing__(self, word: str) -> int:
        tid = self._base + zlib.crc32(word.encode()) % self._span
        if len(self) < 200_000:
            self[word] = tid
        return tid


class _SimStream:
    def __init__(self, texts: dict[int, str]) -> None:
        self._texts = texts

    def step(self, token_id: int) -> str:
        return self._texts.get(token_id, "")


class HFTokenizer:
    """A model folder's ``tokenizer.json`` (``tokenizers``) and its jinja chat template.

    Args:
        path: folder holding ``tokenizer.json`` and ``tokenizer_config.json``
            (chat template there, or in ``chat_template.jinja``), or the
            ``tokenizer.json`` file itself.

    Raises:
        ValueError: files missing or unreadable, or ``tokenizers`` not installed.
    """

    MEDIA_RANGE = 64

    def __init__(self, path: str) -> None:
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError:
            raise ValueError("--tokenizer needs the 'tokenizers' package: pip install tokenizers") from None
        folder = Path(path)
        file = folder if folder.is_file() else folder / "tokenizer.json"
        folder = file.parent
        if not file.is_file():
            raise ValueError(f"--tokenizer {path}: no tokenizer.json there")
        self._tok = _Tok.from_file(str(file))
        config = _read_json(folder / "tokenizer_config.json")
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        jinja_file = folder / "chat_template.jinja"
        if jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        if not template:
            raise ValueError(f"--tokenizer {path}: no chat template in tokenizer_config.json or chat_template.jinja")
        self._template = _compile_template(template)
        self._specials = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.media_base = max(self.vocab_size - self.MEDIA_RANGE, 0)
        self.output_ids = self._visible_word_ids()

    def _visible_word_ids(self) -> list[int]:
        special = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        words = re.compile(r"^ ?[A-Za-z]{3,}$")
        out = []
        for tid in range(self.vocab_size):
            piece = self._tok.id_to_token(tid)
            if piece is None or piece in special:
                continue
            if words.match(self._tok.decode([tid], skip_special_tokens=True)):
                out.append(tid)
        if not out:
            raise ValueError("the tokenizer has no tokens that decode to plain words; the mock cannot emit text")
        return out

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without added special tokens (the template carries them)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The model's chat template with ``add_generation_prompt``."""
        return self._template.render(messages=messages, add_generation_prompt=True, **self._specials)

    def decode(self, ids: Sequence[int]) -> str:
        """``tokenizers`` decode, special tokens skipped."""
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def stream_decoder(self) -> StreamDecoder:
        """``tokenizers``' incremental ``DecodeStream`` (the same work a real engine does per token)."""
        return _HFStream(self._tok)


class _HFStream:
    def __init__(self, tok: Any) -> None:
        from tokenizers.decoders import DecodeStream

        self._tok = tok
        self._stream = DecodeStream(skip_special_tokens=True)

    def step(self, token_id: int) -> str:
        return self._stream.step(self._tok, token_id) or ""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # {"content": "<s>", ...} in older configs
        return str(value.get("content", ""))
    return "" if value is None else str(value)


def _compile_template(source: str) -> Any:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters.setdefault("tojson", lambda v, **kw: json.dumps(v, **kw))
    return env.from_string(source)


def load_tokenizer(path: str | None) -> Tokenizer:
    """The simulated tokenizer, or the real one at ``path``."""
    return HFTokenizer(path) if path else SimTokenizer()
