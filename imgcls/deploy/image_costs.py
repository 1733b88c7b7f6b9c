"""What an image body costs to decode, read from its structure before Pillow sees it.

A few kilobytes can ask a decoder for far more work than their length and their declared
pixels say: a 63 KB PNG of 28x28 pixels with 60 compressed text chunks makes Pillow inflate
60 MiB of text as it opens the file (its own bounds are 1 MiB a chunk, 64 MiB a file); a 63 KB
progressive JPEG repeating an empty scan 4,800 times makes libjpeg walk every block of the image
4,800 times. Neither text nor a fiftieth scan changes a pixel the model sees, so:

- ``pixel_chunks`` gives a PNG with only the chunks its pixels are made of: text, ICC
  profiles, EXIF and the rest are dropped before Pillow opens it, never inflated or kept;
- ``jpeg_scans`` counts a JPEG's scans (a fast byte search: inside entropy-coded data a 0xFF is
  always followed by 0x00 or a restart marker, so 0xFFDA is a scan's start), and
  ``decode_image`` refuses more than ``MAX_JPEG_SCANS``;
- ``cheap_to_decode`` says whether a body is simple enough to be decoded inside a batch
  (``imgcls serve``'s session thread): a PNG of at most ``DIRECT_PARTS`` chunks, or a JPEG of at
  most ``DIRECT_PARTS`` segments before its first scan and ``DIRECT_SCANS`` scans. Anything
  else -- another format, more parts -- is decoded in the decode pool, where a slow decode
  delays nobody's batch. It reads at most ``DIRECT_PARTS`` chunk headers, and one byte search.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "DIRECT_PARTS",
    "DIRECT_SCANS",
    "MAX_JPEG_SCANS",
    "cheap_to_decode",
    "jpeg_scans",
    "pixel_chunks",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_START = b"\xff\xd8\xff"
# The chunks a PNG's first frame is made of (with an APNG's frame chunks, whose count
# ``n_frames`` reads): everything else is metadata.
PIXEL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"acTL", b"fcTL", b"fdAT"})
# libjpeg's progressive JPEG has 6 scans for grey and 10 for colour; optimising encoders a few
# more. A JPEG of more is refused: each scan may make the decoder walk the whole image again.
MAX_JPEG_SCANS = 500
# Inside a batch: PNG chunks (a digit has 3, a phone's screenshot about 10) or JPEG segments
# before the first scan (a camera's photo about 12), and JPEG scans.
DIRECT_PARTS = 32
DIRECT_SCANS = 16


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of a PNG's chunks, up to IEND or a chunk that runs past the end."""
    pos, n = len(PNG_SIGNATURE), len(data)
    while pos + 12 <= n:
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        if end > n:
            return
        kind = data[pos + 4 : pos + 8]
        yield kind, pos, end
        if kind == b"IEND":
            return
        pos = end


def _png_parts(data: bytes, limit: int = 1 << 62) -> tuple[int, bool]:
    """How many chunks a PNG has (counting up to ``limit + 1``), and whether
    all of those are pixel chunks. The loop of ``_png_chunks``, kept tight: it runs in the
    session thread for every small PNG."""
    pos, n, count, plain = 8, len(data), 0, True
    while pos + 12 <= n and count <= limit:
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        if end > n:
            break
        kind = data[pos + 4 : pos + 8]
        count += 1
        if kind not in PIXEL_CHUNKS:
            plain = False
        elif kind == b"IEND":
            break
        pos = end
    return count, plain


def pixel_chunks(data: bytes) -> bytes:
    """A PNG with only the chunks its pixels are made of (``PIXEL_CHUNKS``), in their order; the
    same bytes when it has no other, or is not a PNG. What follows the last whole chunk is
    kept, so that Pillow reports a damaged file as damaged."""
    if not data.startswith(PNG_SIGNATURE) or _png_parts(data)[1]:
        return data
    view = memoryview(data)
    out = bytearray(PNG_SIGNATURE)
    stop = len(PNG_SIGNATURE)
    for kind, start, end in _png_chunks(data):
        if kind in PIXEL_CHUNKS:
            out += view[start:end]
        stop = end
    out += view[stop:]
    return bytes(out)


def jpeg_scans(data: bytes) -> int:
    """How many scans a JPEG holds (0 for anything else); a marker inside a metadata segment
    may add one."""
    return data.count(b"\xff\xda") if data.startswith(JPEG_START) else 0


def _jpeg_header_segments(data: bytes, limit: int) -> int:
    """Segments before a JPEG's first scan, counting up to ``limit + 1``."""
    pos, n, count = 2, len(data), 0
    while pos + 4 <= n and count <= limit:
        if data[pos] != 0xFF:
            break  # damaged: the decoder will say so
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            break
        count += 1
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # no length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return count


def cheap_to_decode(data: bytes) -> bool:
    """Whether a body is a PNG or a JPEG simple enough to decode inside a batch (see the
    module's docstring); its declared pixels are checked by the decoder itself."""
    if data.startswith(PNG_SIGNATURE):
        return _png_parts(data, DIRECT_PARTS)[0] <= DIRECT_PARTS
    if data.startswith(JPEG_START):
        return (
            _jpeg_header_segments(data, DIRECT_PARTS) <= DIRECT_PARTS
            and jpeg_scans(data) <= DIRECT_SCANS
        )
    return False
