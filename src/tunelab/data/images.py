"""Encoded image files <-> uint8 pixel arrays, with the size check that keeps a request from exploding.

Pillow does the codecs; what is added is the order of checks: an image's size is read from its header
and refused over ``MAX_IMAGE_PIXELS`` before any pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 4096 * 4096  # a request image decoding to more is refused before it is decoded


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, C) array as PNG file bytes (lossless, and small for 28x28 images)."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def image_array(raw: bytes) -> np.ndarray:
    """The pixels of an encoded image file (PNG, JPEG...) as a uint8 array; ValueError when it is none.

    Its size is read from the header first: an image over ``MAX_IMAGE_PIXELS`` is refused before
    decoding (a few kilobytes of PNG can decode to gigabytes).
    """
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{image.width}x{image.height} pixels; at most {MAX_IMAGE_PIXELS}")
            return np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image file ({type(exc).__name__})") from None


def decode_image(data: str) -> np.ndarray:
    """A base64-encoded image file -> its uint8 pixels; ValueError (a 422 at the server) if it is none."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    return image_array(raw)
