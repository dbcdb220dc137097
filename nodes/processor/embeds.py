"""Check precomputed embeddings (``image_embeds``/``audio_embeds``/``video_embeds`` parts), as vLLM takes them.

vLLM's chat API takes, for ``<modality>_embeds``, either one base64 string (a
tensor saved with ``numpy.save`` or ``torch.save``) or a dict of such strings
and small numeric arrays of metadata (e.g. ``{"image_embeds": ...,
"image_grid_thw": [1, 4, 4]}`` for Qwen2-VL). Only ``.npy`` tensors are
accepted here: their header is parsed without unpickling anything and checked
against the data's length, and the values must be finite. ``torch.save`` files
are pickles, and unpickling untrusted bytes is how loaders get exploited, so
they are refused with a hint to send ``.npy`` instead.
"""

from __future__ import annotations

import io
import math
import tokenize
import warnings
from typing import Any

import numpy as np

from .errors import refuse
from .fetch import decode_base64, too_large

MODALITIES = ("image", "audio", "video")
_NPY_MAGIC = b"\x93NUMPY"
_MAX_METADATA = 4096


def check_embeds(payload: Any, modality: str, max_bytes: int, param: str) -> int:
    """Validate the payload of a ``<modality>_embeds`` part.

    Returns:
        The number of tensor bytes it holds.

    Raises:
        RequestError: not the accepted shape, dtype or encoding, non-finite values, or too large.
    """
    key = f"{modality}_embeds"
    field = f"{param}.{key}"
    if isinstance(payload, str):
        return check_tensor(decode_base64(payload, max_bytes, field), max_bytes, field, main=True).nbytes
    if not isinstance(payload, dict) or not payload:
        raise refuse(field, "must be a base64 .npy tensor or an object of them plus numeric metadata arrays")
    if key not in payload:
        raise refuse(field, f"the object must hold the embeddings under '{key}'")
    total = 0
    for name, value in payload.items():
        where = f"{field}.{name}"
        if isinstance(value, str):
            total += check_tensor(decode_base64(value, max_bytes - total, where), max_bytes, where,
                                  main=name == key).nbytes
        elif isinstance(value, list) and name != key:
            _check_metadata(value, where)
        else:
            raise refuse(where, "must be a base64 .npy tensor" + ("" if name == key else " or a flat numeric array"))
        if total > max_bytes:
            raise too_large(max_bytes, field)
    return total


def check_tensor(data: bytes, max_bytes: int, param: str, main: bool) -> np.ndarray:
    """Parse a ``.npy`` file, checking its header before reading the data.

    ``main`` is the embeddings tensor itself (floating point, 2 or 3
    dimensions); other tensors are metadata (integer or floating, up to 3
    dimensions).
    """
    if not data.startswith(_NPY_MAGIC):
        pickled = data[:2] in (b"PK", b"\x80\x02")
        hint = " (torch.save pickles are not accepted: send numpy.save output)" if pickled else ""
        raise refuse(param, "not a .npy tensor" + hint)
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's notes on Python 2 headers: the client's problem, not a log line
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
            else:
                raise refuse(param, f".npy version {version} is not accepted (1.0 or 2.0)")
    except (ValueError, SyntaxError, TypeError, OverflowError, tokenize.TokenError, RecursionError, MemoryError):
        # numpy parses the header as a Python literal; any of these means it is not one
        raise refuse(param, "the .npy header is malformed") from None
    _check_header(shape, dtype, main, param)
    size = math.prod(shape) * dtype.itemsize
    if size > max_bytes:
        raise too_large(max_bytes, param)
    if len(data) - buf.tell() != size:
        raise refuse(param, f"the .npy data holds {len(data) - buf.tell()} bytes; its header "
                            f"({dtype}, shape {tuple(shape)}) needs {size}")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=buf.tell())
    array = array.reshape(shape, order="F" if fortran else "C")
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise refuse(param, "the tensor holds NaN or infinite values")
    return array


def _check_header(shape: tuple[int, ...], dtype: np.dtype, main: bool, param: str) -> None:
    kinds = "f" if main else "fiu"
    if (dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None
            or not dtype.isnative):
        wanted = "float16, float32 or float64" if main else "a numeric dtype"
        raise refuse(param, f"dtype {dtype.str} is not accepted; use {wanted} in native byte order")
    ndims = (2, 3) if main else (0, 1, 2, 3)
    if len(shape) not in ndims or any(d < 0 for d in shape):
        raise refuse(param, f"shape {tuple(shape)} is not accepted; expected {' or '.join(map(str, ndims))} "
                            "dimensions" + (" (tokens, hidden size)" if main else ""))
    if main and 0 in shape:
        raise refuse(param, f"shape {tuple(shape)} is empty")


def _check_metadata(values: list[Any], param: str) -> None:
    if len(values) > _MAX_METADATA:
        raise refuse(param, f"metadata arrays may hold at most {_MAX_METADATA} numbers")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise refuse(param, "metadata arrays must hold numbers only")
        if (isinstance(v, float) and not math.isfinite(v)) or (isinstance(v, int) and not -2**63 <= v < 2**63):
            raise refuse(param, "metadata arrays must hold finite numbers (integers within int64)")
