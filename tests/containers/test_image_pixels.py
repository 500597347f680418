"""A held PNG rebuilt as what a viewer draws, coarsened (containers/image_pixels.py, R7-3c).

Pillow is the reference decoder here only: the agent itself never hands a script's file
to an image library."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from containers import image_pixels
from containers.image_canon import NotCanonical, canonical_png

RNG = np.random.default_rng(7)
NOISE = RNG.integers(0, 256, (37, 53, 4), dtype=np.uint8)


def _png(img: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _drawn(raw: bytes) -> np.ndarray[Any, Any]:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGBA")).astype(int)


def _decoded(raw: bytes) -> np.ndarray[Any, Any]:
    """This module's 8-bit RGBA of ``raw``, before coarsening."""
    width, height, depth, colour = struct.unpack(">IIBB", raw[16:26])
    chunks, pos = {}, 8
    idat = b""
    while pos < len(raw):
        (length,), kind = struct.unpack(">I", raw[pos:pos + 4]), raw[pos + 4:pos + 8]
        body = raw[pos + 8:pos + 8 + length]
        idat += body if kind == b"IDAT" else b""
        chunks[kind] = body
        pos += 12 + length
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = (width * channels * depth + 7) // 8
    rows = image_pixels.unfilter(zlib.decompress(idat), height, row,
                                 max(1, channels * depth // 8))
    return image_pixels.rgba(rows, width, colour, depth, channels, chunks.get(b"PLTE"),
                             chunks.get(b"tRNS")).astype(int)


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "LA", "P", "1"])
def test_every_colour_type_decodes_as_a_viewer_draws_it(mode: str) -> None:
    """Pillow writes each row with the filter that compresses it best, so these images
    use every filter type; the decoded pixels are Pillow's exactly."""
    raw = _png(Image.fromarray(NOISE).convert(mode))
    assert np.array_equal(_decoded(raw), _drawn(raw))


def test_sixteen_bits_and_transparent_keys_decode_as_a_viewer_draws_them() -> None:
    grey16 = NOISE[..., 0].astype(np.uint16) * 257
    raw = _png(Image.fromarray(grey16))
    assert np.array_equal(_decoded(raw)[..., 0], NOISE[..., 0])
    key = tuple(int(v) for v in NOISE[0, 0, :3])
    keyed = _png(Image.fromarray(NOISE[..., :3]), transparency=key)
    assert _decoded(keyed)[0, 0, 3] == 0 and np.array_equal(_decoded(keyed), _drawn(keyed))


def test_rebuilt_chart_differs_from_the_original_by_half_a_level_at_most() -> None:
    raw = _png(Image.fromarray(NOISE))
    before, after = _drawn(raw), _drawn(canonical_png(raw))
    visible = after[..., 3] > 0
    assert np.abs(after - before)[visible].max() <= 19
    assert set(np.unique(after).tolist()) <= {round(i * 255 / 7) for i in range(8)}


def test_low_bits_filters_and_palette_order_do_not_survive() -> None:
    """The same chart, written three ways a decoder tells apart and an eye does not: the
    rebuilt files are byte for byte one file."""
    img = Image.new("RGB", (60, 30), "white")
    img.paste((31, 95, 153), (10, 5, 50, 25))
    plain = _png(img)
    marked = np.asarray(img).copy()
    marked[..., 0] ^= RNG.integers(0, 2, marked.shape[:2], dtype=np.uint8)  # low bits
    palette = img.quantize(colors=4)
    shuffled = palette.remap_palette([1, 0, 3, 2])  # the same pixels, the entries reordered
    unfiltered = _png(img, compress_level=0)
    rebuilt = {canonical_png(r) for r in (plain, _png(Image.fromarray(marked)),
                                          _png(palette), _png(shuffled), unfiltered)}
    assert len(rebuilt) == 1


def test_a_transparent_pixel_keeps_no_colour() -> None:
    clear = NOISE.copy()
    clear[..., 3] = 0
    rebuilt = _drawn(canonical_png(_png(Image.fromarray(clear))))
    assert not rebuilt.any()


def test_a_pixel_naming_a_missing_palette_entry_is_refused() -> None:
    raw = _png(Image.fromarray(NOISE).convert("P"))
    start = raw.index(b"PLTE") - 4
    short = b"\x00\x00\x00"
    plte = struct.pack(">I", 3) + b"PLTE" + short + struct.pack(">I", zlib.crc32(b"PLTE" + short))
    (length,) = struct.unpack(">I", raw[start:start + 4])
    hostile = raw[:start] + plte + raw[start + 12 + length:]
    with pytest.raises(NotCanonical):
        canonical_png(hostile)


@pytest.mark.parametrize(("width", "height"), [(1415, 1415), (4097, 1), (1, 4097),
                                               (4096, 400)])
def test_an_image_larger_than_the_agent_rebuilds_is_refused(width: int, height: int
                                                            ) -> None:
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (height * ((width + 7) // 8 + 1)))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
           + chunk(b"IEND", b""))
    if width * height <= image_pixels.MAX_PIXELS and max(width, height) <= image_pixels.MAX_SIDE:
        assert canonical_png(raw).startswith(b"\x89PNG")  # the largest it rebuilds
        return
    with pytest.raises(NotCanonical):
        canonical_png(raw)


def _filtered(rows: np.ndarray[Any, Any], kind: int, bpp: int) -> bytes:
    """``rows`` (height x bytes) written with filter ``kind`` on every row (the PNG
    specification's encoder side, 9.2)."""
    out, prev = bytearray(), [0] * rows.shape[1]
    for line in rows.tolist():
        out.append(kind)
        for i, x in enumerate(line):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            p = a + b - c
            paeth = min((abs(p - a), 0, a), (abs(p - b), 1, b), (abs(p - c), 2, c))[2]
            pred = [0, a, b, (a + b) >> 1, paeth][kind]
            out.append((x - pred) & 0xFF)
        prev = line
    return bytes(out)


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
def test_each_filter_type_is_undone(kind: int) -> None:
    rows = NOISE.reshape(NOISE.shape[0], -1)
    undone = image_pixels.unfilter(_filtered(rows, kind, 4), rows.shape[0], rows.shape[1], 4)
    assert np.array_equal(undone, rows)


def test_an_unknown_filter_type_is_refused() -> None:
    rows = NOISE.reshape(NOISE.shape[0], -1)
    data = bytearray(_filtered(rows, 0, 4))
    data[0] = 5
    with pytest.raises(image_pixels.Unreadable):
        image_pixels.unfilter(bytes(data), rows.shape[0], rows.shape[1], 4)
