"""Pixels for the figures as PNG data URIs (an image trace's ``source``): a few kilobytes where the
same pixels as a ``z`` array of numbers take hundreds of kilobytes of JSON; and palette colours
as RGB."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def rgb(colour: str) -> tuple[int, int, int]:
    """A palette colour "#rrggbb" as (red, green, blue)."""
    return tuple(int(colour[index : index + 2], 16) for index in (1, 3, 5))


def translucent(colour: str, opacity: float) -> str:
    """A palette colour as a see-through fill."""
    red, green, blue = rgb(colour)
    return f"rgba({red}, {green}, {blue}, {opacity})"


def _uri(image: Image.Image, **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_data_uri(pixels: np.ndarray) -> str:
    """An (H, W, 3) uint8 RGB array as a PNG data URI."""
    return _uri(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="RGB"))


def png_uri(indices: np.ndarray, colours: list[str]) -> str:
    """A palette PNG as a data URI: pixel (i, j) is ``colours[indices[i, j]]``, stored with as few
    bits per pixel as the palette needs (a binary mask takes one bit a weight, before compression)."""
    rows, cols = indices.shape
    image = Image.frombytes("P", (cols, rows), np.ascontiguousarray(indices, dtype=np.uint8).tobytes())
    image.putpalette([channel for colour in colours for channel in rgb(colour)])
    return _uri(image, optimize=True, bits=next(b for b in (1, 2, 4, 8) if len(colours) <= 2**b))
