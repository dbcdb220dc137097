"""pydantic's validation errors as OpenAI's 400: one error, naming the field as OpenAI does
(``messages[0].content[1].image_url.url``), in OpenAI's words."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from nodes.common.openai_errors import RequestError

_TYPE_ERRORS = ("_type", "_parsing")
_QUOTE = "'"


def rejection(exc: ValidationError, body: dict[str, Any]) -> RequestError:
    """The most specific of pydantic's errors as OpenAI's 400: the deepest field it names, with a
    message in OpenAI's words."""
    found = [(_param(e["loc"], body, e["type"] == "missing"), e) for e in exc.errors(include_url=False)]
    depth = max(len(p) for p, _ in found)
    deepest = [(p, e) for p, e in found if len(p) == depth]
    # Of a union's branches, one that got the right type and a wrong value says more than the others.
    param, error = next(((p, e) for p, e in deepest if not e["type"].endswith(_TYPE_ERRORS)), deepest[0])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if param == "prompt" or param.startswith("prompt["):
        return RequestError(400, "'prompt' must be a string, a list of one string, or token ids (a list of "
                            "integers, or a list of one such list); send one prompt per request", "prompt",
                            "invalid_type")
    if kind == "missing":
        return RequestError(400, f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        field = f"{param}.{str(ctx.get('discriminator', '')).strip(_QUOTE)}"  # role or type
        tag = ctx.get("tag")
        if kind == "union_tag_not_found":
            return RequestError(400, f"Missing required parameter: '{field}'.", field, "missing_required_parameter")
        if tag == "file":
            return RequestError(400, f"'{field}': file content parts are not supported here; send the text, or "
                                "media as image_url, input_audio, video_url or audio_url parts", field,
                                "unsupported_value")
        return RequestError(400, f"Invalid value for '{field}': {tag!r} is not one of {ctx.get('expected_tags')}.",
                            field, "invalid_value")
    if kind == "literal_error":
        return RequestError(400, f"Invalid value for '{param}': {value!r}; expected {ctx.get('expected')}.", param,
                            "invalid_value")
    if param == "n":
        return RequestError(400, f"'n' is {value!r}; only n=1 is supported", "n", "unsupported_value")
    if kind.endswith(_TYPE_ERRORS):
        kinds = dict.fromkeys(_lower(e["msg"]) for p, e in found if p == param and e["type"].endswith(_TYPE_ERRORS))
        return RequestError(400, f"Invalid type for '{param}': {' or '.join(kinds)}.", param, "invalid_type")
    return RequestError(400, f"Invalid value for '{param}': {_lower(error['msg'])} (got {_short(value)}).", param,
                        "invalid_value")


def _param(loc: tuple[Any, ...], body: Any, missing: bool) -> str:
    """pydantic's ``loc`` as the field's path in the body (``messages[0].content[1].image_url.url``):
    the union branches and discriminator tags pydantic puts in between are left out."""
    out, node, tagged = "", body, None
    for i, key in enumerate(loc):
        if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            out, node = f"{out}[{key}]", node[key]
        elif isinstance(node, dict) and isinstance(key, str):
            if tagged is not node and key in (node.get("role"), node.get("type")):
                tagged = node  # the discriminator's value, once right after entering the object
            elif key in node:
                out, node = f"{out}.{key}" if out else key, node[key]
            elif missing and i == len(loc) - 1:
                out = f"{out}.{key}" if out else key
    return out


def _lower(msg: str) -> str:
    return msg[:1].lower() + msg[1:]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
