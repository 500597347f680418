"""A held PNG as what a viewer draws from it, and nothing else (R7-3).

An image carried to the output checkers is judged by looking at it, so whatever of the
file no viewer shows would be released unseen: text and other ancillary chunks (``tEXt``,
``zTXt``, ``iTXt``, ``eXIf``, ``iCCP``, private ones), bytes after ``IEND``, bytes after
the end of the deflate stream, a palette a truecolour image only suggests. A script can
put the rows it read there, and a checker approving the chart releases them. The agent
therefore rebuilds every PNG before it leaves the domain from the chunks that draw it
(``IHDR``, ``PLTE`` of a palette image, ``tRNS``, the image data), and refuses one it
cannot read exactly: the decompressed data must be exactly the rows its header declares,
with valid filter bytes. What the decoder reads but the eye cannot tell (the low bits of
pixels, palette entries no pixel uses, each row's filter type: R7-3c) goes too: the
pixels are decoded and written again coarsened (:mod:`containers.image_pixels`), as
8-bit truecolour, unfiltered.

Pure Python, numpy and zlib, no image library: the file is hostile, and the agent reads it
outside the job's sandbox.
"""

from __future__ import annotations

import struct
import zlib

from containers import image_pixels

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bit depths allowed for each colour type, and its channels (PNG specification, 11.2.2).
DEPTHS = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (1, (1, 2, 4, 8)),
          4: (2, (8, 16)), 6: (4, (8, 16))}
#: The largest decompressed image data read (a bomb must not exhaust the agent's memory).
MAX_RAW_BYTES = 64 * 1024 * 1024


class NotCanonical(ValueError):
    """The file is not a PNG the agent can read exactly (the message names no value; the
    output checks report one reason for all, containers.checks.PNG_REFUSED)."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _chunks(raw: bytes) -> tuple[bytes, bytes | None, bytes | None, bytes]:
    """IHDR, PLTE, tRNS and the joined IDAT of ``raw``; every other chunk and anything
    after IEND are left out."""
    pos, header, palette, alpha, data = len(SIGNATURE), None, None, None, []
    while True:
        if pos + 8 > len(raw):
            raise NotCanonical("not a complete PNG: it ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        end = pos + 12 + length
        if end > len(raw):
            raise NotCanonical("not a complete PNG: a chunk runs past the end of the file")
        body = raw[pos + 8:end - 4]
        if zlib.crc32(kind + body) != struct.unpack(">I", raw[end - 4:end])[0]:
            raise NotCanonical("not a well-formed PNG: a chunk's checksum does not match")
        pos = end
        if header is None and kind != b"IHDR":
            raise NotCanonical("not a well-formed PNG: IHDR is not its first chunk")
        if kind == b"IEND":
            break
        if kind == b"IHDR":
            if header is not None:
                raise NotCanonical("not a well-formed PNG: two IHDR chunks")
            header = body
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            alpha = body
        elif kind == b"IDAT":
            data.append(body)
        elif not kind[0] & 0x20:  # an unknown critical chunk: no viewer could draw it
            raise NotCanonical("a PNG with a chunk no viewer draws (unknown critical chunk)")
    assert header is not None
    return header, palette, alpha, b"".join(data)


def canonical_png(raw: bytes) -> bytes:
    """The PNG a viewer draws from ``raw``, rebuilt from the chunks that draw it."""
    if not raw.startswith(SIGNATURE):
        raise NotCanonical("not the image type its name says")
    header, palette, alpha, data = _chunks(raw)
    if len(header) != 13:
        raise NotCanonical("not a well-formed PNG: IHDR has the wrong length")
    width, height, depth, colour, method, filtering, interlace = struct.unpack(
        ">IIBBBBB", header)
    channels, depths = DEPTHS.get(colour, (0, ()))
    if depth not in depths or method or filtering or not width or not height:
        raise NotCanonical("not a well-formed PNG: its header is not one the format allows")
    if interlace:
        raise NotCanonical("an interlaced PNG: write it without interlacing")
    row = (width * channels * depth + 7) // 8
    expected = height * (1 + row)
    if expected > MAX_RAW_BYTES:
        raise NotCanonical(f"an image larger than {MAX_RAW_BYTES} bytes of pixel data")
    if width * height > image_pixels.MAX_PIXELS or max(width, height) > image_pixels.MAX_SIDE:
        raise NotCanonical("an image with more pixels than the agent rebuilds")
    if colour == 3 and (palette is None or not 0 < len(palette) <= 768
                        or len(palette) % 3):
        raise NotCanonical("a palette PNG without a valid palette")
    if alpha is not None and not ({0: len(alpha) == 2, 2: len(alpha) == 6}.get(colour)
                                  or (colour == 3 and palette is not None
                                      and len(alpha) <= len(palette) // 3)):
        alpha = None  # not allowed for this colour type: a viewer ignores it
    inflate = zlib.decompressobj()
    try:
        pixels = inflate.decompress(data, expected + 1)
    except zlib.error:
        raise NotCanonical("not a well-formed PNG: its image data does not decompress") from None
    if len(pixels) != expected or not inflate.eof or inflate.unused_data:
        raise NotCanonical("a PNG whose image data is not exactly the rows its header "
                           "declares")
    bpp = max(1, channels * depth // 8)
    try:
        rows = image_pixels.unfilter(pixels, height, row, bpp)
        drawn = image_pixels.rgba(rows, width, colour, depth, channels, palette, alpha)
    except image_pixels.Unreadable:
        raise NotCanonical("a PNG whose pixels cannot be decoded as its header declares"
                           ) from None
    kind, lines = image_pixels.encode_rows(image_pixels.coarsen(drawn))
    header = struct.pack(">IIBBBBB", width, height, 8, kind, 0, 0, 0)
    return b"".join([SIGNATURE, _chunk(b"IHDR", header),
                     _chunk(b"IDAT", zlib.compress(lines, 9)), _chunk(b"IEND", b"")])
