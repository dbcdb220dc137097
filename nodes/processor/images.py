"""Decode and check images with pillow: format whitelist, pixel limit checked before decoding."""

from __future__ import annotations

import io
import struct
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import refuse

#: Raster formats engines read with pillow. Others (EPS runs Ghostscript, PSD, ICO...) are refused.
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")


def check_image(data: bytes, max_pixels: int, param: str, formats: tuple[str, ...] = FORMATS) -> tuple[str, int, int]:
    """Open ``data``, check its header's size against ``max_pixels``, then decode it fully.

    The size comes from the header alone, so a small file claiming a huge
    canvas (a decompression bomb) is refused before any pixel is decoded.

    Returns:
        (mime type, width, height).

    Raises:
        RequestError: not an image of an allowed format, truncated or corrupt, or too many pixels.
    """
    try:
        with warnings.catch_warnings():
            # Our own limit replaces pillow's warning; its hard limit (2x) still raises below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise refuse(param, f"image is {width}x{height} = {width * height} pixels; the limit is "
                                        f"{max_pixels} (Processor(max_pixels=...))")
                img.load()
                mime = Image.MIME.get(img.format or "", "application/octet-stream")
    except UnidentifiedImageError:
        raise refuse(param, f"not an image in an accepted format ({', '.join(formats)})") from None
    except Image.DecompressionBombError:
        raise refuse(param, f"image has more pixels than the limit of {max_pixels} (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, MemoryError) as exc:
        # pillow reports corrupt files through any of these; the file is at fault, not the server.
        raise refuse(param, f"image could not be decoded: {type(exc).__name__}: {str(exc)[:200]}") from None
    return mime, width, height

