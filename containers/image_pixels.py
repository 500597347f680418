"""A PNG's pixels as a viewer draws them, coarsened to what an eye tells apart (R7-3c).

:mod:`containers.image_canon` keeps only the chunks that draw an image; this module
rebuilds what those chunks draw. A decoder reads more than the eye sees: the low bits of
each sample (a chart whose colours are off by one in 255 carries three bits a pixel),
the colour under a fully transparent pixel, palette entries no pixel uses and their
order, each row's filter type, a 16-bit sample's low byte. So every image is decoded to
8-bit RGBA (PNG specification, sections 9 and 13: filters undone, samples scaled,
palette and transparency applied), each channel is rounded to one of :data:`LEVELS`
values evenly spread over 0..255, a transparent pixel's colour is set to black, and the
result is written as truecolour with no filter. Two pixels that differ after this differ
by at least a seventh of the range in some channel: data written in them is drawn where
the checker looks, not hidden below what it can see.

Plain numpy over the decompressed rows, no image library: the file is hostile and the
agent reads it outside the job's sandbox. :data:`MAX_PIXELS` and :data:`MAX_SIDE` bound
the work: about a second of the agent's CPU for the largest image on this project's
2-core test machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Values each channel is rounded to (0, 36, 73, ..., 255): a step of 36 in 255 is seen.
LEVELS = 8
#: The largest image rebuilt (a 1,600 x 1,250 chart; 2,000 x 1,000): undoing the filters
#: takes a step a diagonal and time in proportion to the pixels, and its samples some
#: 50 MB at most.
MAX_PIXELS = 2_000_000
#: The longest side rebuilt (a step a diagonal: height + width steps).
MAX_SIDE = 4096

U8 = np.ndarray[Any, np.dtype[np.uint8]]


class Unreadable(ValueError):
    """The image data cannot be decoded as its header declares (no value named)."""


def unfilter(data: bytes, height: int, row: int, bpp: int) -> U8:
    """The rows of ``data`` (each a filter byte and ``row`` bytes) with their filters
    undone (PNG specification, 9.2); ``bpp`` bytes a pixel, at least 1.

    A byte depends on the byte a pixel to its left, the one above and the one above-left,
    so every pixel of one anti-diagonal (row + column constant) depends only on the two
    diagonals before it: the image is undone one diagonal at a time, each diagonal's
    pixels at once, whatever filter each row chose (height + width steps, not a step a
    byte)."""
    lines = np.frombuffer(data, dtype=np.uint8).reshape(height, 1 + row)
    kinds = lines[:, :1].astype(np.int16)
    if int(kinds.max()) > 4:
        raise Unreadable("a row has an unknown filter type")
    width = -(-row // bpp)  # pixels a row (bytes, below 8 bits a sample)
    flat = np.zeros((height, width * bpp), dtype=np.uint8)
    flat[:, :row] = lines[:, 1:]
    # Sheared: pixel (y, x) at column y + x, so that a diagonal is a column (a slice).
    ys, cols = np.arange(height)[:, None], np.arange(height)[:, None] + np.arange(width)
    sheared = np.zeros((height, height + width - 1, bpp), dtype=np.uint8)
    sheared[ys, cols] = flat.reshape(height, width, bpp)
    # Undone, sheared, after a row and two columns of zeros (what the filters see past the
    # image's edges; cells off the image are never written and stay zero): pixel (y, x) at
    # [y + 1, y + x + 2].
    out = np.zeros((height + 1, height + width + 1, bpp), dtype=np.int16)
    for d in range(height + width - 1):
        lo, hi = max(0, d - width + 1), min(height, d + 1)  # the rows diagonal d crosses
        a = out[lo + 1:hi + 1, d + 1]  # left: diagonal d - 1, same row
        b = out[lo:hi, d + 1]  # above: diagonal d - 1, the row before
        c = out[lo:hi, d]  # above left: diagonal d - 2, the row before
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        kind = kinds[lo:hi]
        pred = np.where(kind == 1, a, np.where(kind == 2, b, np.where(
            kind == 3, (a + b) >> 1, np.where(kind == 4, paeth, 0))))
        out[lo + 1:hi + 1, d + 2] = (sheared[lo:hi, d] + pred) & 0xFF
    undone: U8 = out[ys + 1, cols + 2].reshape(height, width * bpp)[:, :row].astype(np.uint8)
    return undone


def samples(rows: U8, width: int, depth: int, channels: int) -> np.ndarray[Any, Any]:
    """Each pixel's samples at their own depth, shape (height, width, channels)."""
    height = rows.shape[0]
    if depth == 8:
        return rows.reshape(height, width, channels).astype(np.int32)
    if depth == 16:
        pairs = rows.reshape(height, width, channels, 2).astype(np.int32)
        return pairs[..., 0] * 256 + pairs[..., 1]
    bits = np.unpackbits(rows, axis=1)[:, :width * depth].reshape(height, width, depth)
    weights = 1 << np.arange(depth - 1, -1, -1, dtype=np.int32)
    packed: np.ndarray[Any, Any] = (bits.astype(np.int32) * weights).sum(axis=2)
    return packed[..., None]


def rgba(rows: U8, width: int, colour: int, depth: int, channels: int,
         palette: bytes | None, alpha: bytes | None) -> U8:
    """8-bit RGBA, shape (height, width, 4), of the decoded rows (PNG specification, 13.13
    for the sample scaling and 11.3.2.1 for ``tRNS``)."""
    s = samples(rows, width, depth, channels)
    top = (1 << depth) - 1
    if colour == 3:
        assert palette is not None
        n = len(palette) // 3
        idx = s[..., 0]
        if int(idx.max()) >= n:
            raise Unreadable("a pixel names a palette entry the palette does not have")
        table = np.frombuffer(palette, dtype=np.uint8).reshape(n, 3).astype(np.int32)
        opacity = np.full(n, 255, dtype=np.int32)
        if alpha is not None:
            opacity[:len(alpha)] = np.frombuffer(alpha, dtype=np.uint8)
        out: U8 = np.concatenate([table[idx], opacity[idx][..., None]], axis=2).astype(
            np.uint8)
        return out
    colour_channels = 1 if colour in (0, 4) else 3
    scaled = (s * 255 + top // 2) // top  # to 0..255 whatever the depth
    rgb = scaled[..., :colour_channels]
    if colour_channels == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if colour in (4, 6):
        a = scaled[..., colour_channels]
    else:
        a = np.full(s.shape[:2], 255, dtype=np.int32)
        if alpha is not None:  # one colour, at the image's own depth, is transparent
            key = np.frombuffer(alpha, dtype=">u2").astype(np.int32)
            a = np.where((s[..., :colour_channels] == key).all(axis=2), 0, a)
    drawn: U8 = np.concatenate([rgb, a[..., None]], axis=2).astype(np.uint8)
    return drawn


def coarsen(pixels: U8) -> U8:
    """Each channel rounded to one of :data:`LEVELS` values; a transparent pixel black."""
    step = 255 / (LEVELS - 1)
    out = np.rint(np.rint(pixels / step) * step).astype(np.uint8)
    out[out[..., 3] == 0] = 0
    return out


def encode_rows(pixels: U8) -> tuple[int, bytes]:
    """(PNG colour type, filtered rows) of ``pixels``: truecolour, with alpha only where
    some pixel is not opaque, every row unfiltered (filter type 0)."""
    opaque = bool((pixels[..., 3] == 255).all())
    body = pixels[..., :3] if opaque else pixels
    height = body.shape[0]
    flat = np.ascontiguousarray(body).reshape(height, -1)
    lines = np.concatenate([np.zeros((height, 1), dtype=np.uint8), flat], axis=1)
    return (2 if opaque else 6), lines.tobytes()
