"""Refusals: every one names the content part it is about, in the message and in OpenAI's ``param``."""

from __future__ import annotations

from nodes.common.openai_errors import RequestError


def refuse(param: str, why: str, status: int = 400) -> RequestError:
    """A 400 (or ``status``) saying ``param: why``."""
    return RequestError(status, f"{param}: {why}", param)
