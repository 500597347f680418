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
agent reads it outside the job's sandbox. The Average and Paeth filters run byte by byte
in Python; :data:`MAX_SAMPLES_BYTES` bounds that work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Values each channel is rounded to (0, 36, 73, ..., 255): a step of 36 in 255 is seen.
LEVELS = 8
#: The largest image rebuilt, in bytes of 8-bit RGBA (a 2,048 x 2,048 chart): its Average
#: and Paeth rows cost about a microsecond a byte, and its samples some 100 MB at most.
MAX_SAMPLES_BYTES = 16 * 1024 * 1024

U8 = np.ndarray[Any, np.dtype[np.uint8]]


class Unreadable(ValueError):
    """The image data cannot be decoded as its header declares (no value named)."""


def unfilter(data: bytes, height: int, row: int, bpp: int) -> U8:
    """The rows of ``data`` (each a filter byte and ``row`` bytes) with their filters
    undone (PNG specification, 9.2); ``bpp`` bytes a pixel, at least 1."""
    lines = np.frombuffer(data, dtype=np.uint8).reshape(height, 1 + row)
    out = np.zeros((height, row), dtype=np.uint8)
    prev = np.zeros(row, dtype=np.int32)
    for y in range(height):
        kind, x = int(lines[y, 0]), lines[y, 1:].astype(np.int32)
        if kind == 0:
            cur = x
        elif kind == 1:  # Sub: a running sum of each byte's pixel position, mod 256
            width = -(-row // bpp)
            padded = np.zeros(width * bpp, dtype=np.int32)
            padded[:row] = x
            cur = (np.cumsum(padded.reshape(width, bpp), axis=0).ravel()[:row]) & 0xFF
        elif kind == 2:  # Up
            cur = (x + prev) & 0xFF
        elif kind in (3, 4):
            cur = np.asarray(_sequential(kind, x.tolist(), prev.tolist(), bpp),
                             dtype=np.int32)
        else:
            raise Unreadable("a row has an unknown filter type")
        out[y] = cur
        prev = cur
    return out


def _sequential(kind: int, x: list[int], b: list[int], bpp: int) -> list[int]:
    """Average (3) or Paeth (4): each byte depends on the one a pixel to its left."""
    cur = list(x)
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        if kind == 3:
            cur[i] = (cur[i] + ((a + b[i]) >> 1)) & 0xFF
            continue
        c = b[i - bpp] if i >= bpp else 0
        p = a + b[i] - c
        pa, pb, pc = abs(p - a), abs(p - b[i]), abs(p - c)
        pred = a if pa <= pb and pa <= pc else (b[i] if pb <= pc else c)
        cur[i] = (cur[i] + pred) & 0xFF
    return cur


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
