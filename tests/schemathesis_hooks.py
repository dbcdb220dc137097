"""Schemathesis hooks for the frontend's fuzz run (loaded with SCHEMATHESIS_HOOKS=tests.schemathesis_hooks).

One thing a JSON Schema of the frontend cannot state: a prompt's token ids must lie
within the served model's vocabulary, which only the model's files know (vLLM reports
no vocabulary size, and refuses an id outside it with 400, as the mock does). So
positive cases get their token ids folded into the mock's vocabulary; negative cases
are sent as generated.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from nodes.mock.tokenizer import SimTokenizer


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    body = case.body
    if meta is None or not meta.generation.mode.is_positive or not isinstance(body, dict):
        return case
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt:
        ids = prompt[0] if isinstance(prompt[0], list) else prompt
        ids[:] = [_fold(i) for i in ids]
    return case


def _fold(token: Any) -> Any:
    """An id (an int, or a float JSON Schema counts as an integer) moved into the vocabulary."""
    if isinstance(token, bool) or not isinstance(token, (int, float)) or token != int(token):
        return token
    return int(token) % SimTokenizer.vocab_size
