"""Small request bodies made to cost a decoder much more than their size says, and a request
head that never ends. Shared by the service's tests and ``benchmarks/serve_hostile.py``; only
zlib and Pillow, so that anyone can make them again.

- ``png_with_text``: a 28x28 PNG carrying ``chunks`` zTXt or iTXt chunks, each of which
  inflates to ``inflated`` bytes (zlib squeezes 1 MiB of zeros into about 1 KB): 60 of them make
  a 63 KB body that Pillow inflates to 60 MiB as it opens the file.
- ``jpeg_with_empty_scans``: a progressive 1000x1000 grey JPEG whose first AC scan is repeated
  ``scans`` times: each copy is 12 bytes and makes libjpeg walk every block of the image again.
- ``header_flood``: the first line and headers of a request whose headers go on and on.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

from PIL import Image

__all__ = ["header_flood", "jpeg_with_empty_scans", "png_with_text"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_text(kind: str = "zTXt", chunks: int = 60, inflated: int = 1 << 20) -> bytes:
    """A black 28x28 PNG with ``chunks`` compressed text chunks (``zTXt`` or ``iTXt``) after
    its header, each inflating to ``inflated`` bytes."""
    buf = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buf, "PNG")
    png = buf.getvalue()
    text = zlib.compress(b"\0" * (inflated - 64), 9)
    if kind == "zTXt":  # keyword, NUL, method 0, compressed text
        body = b"Comment\0\0" + text
    elif kind == "iTXt":  # keyword, NUL, compressed, method, language NUL, keyword NUL, text
        body = b"Comment\0\x01\0\0\0" + text
    else:
        raise ValueError(f"kind must be zTXt or iTXt, got {kind!r}")
    header_end = 8 + 25  # the signature and the IHDR chunk
    return png[:header_end] + _chunk(kind.encode(), body) * chunks + png[header_end:]


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a JPEG after SOI; a scan runs to the next marker
    that is not a stuffed 0xFF00 or a restart marker."""
    out = []
    pos = 2
    while pos + 1 < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            out.append((marker, pos, pos + 2))
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # SOS: its entropy-coded data follows
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        out.append((marker, pos, end))
        pos = end
    return out


def jpeg_with_empty_scans(scans: int = 4800, side: int = 1000) -> bytes:
    """A progressive ``side`` x ``side`` black JPEG with its first AC scan (a band with nothing
    in it: 12 bytes) repeated ``scans`` times before the end of the image. libjpeg decodes it
    (with a warning it keeps to itself), walking every block once per copy."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 0).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    segments = _jpeg_segments(data)
    # the first scan of the widest AC band (spectral start > 0, no earlier approximation)
    first_ac = [
        (data[a + 8] - data[a + 7], a, b)
        for m, a, b in segments
        if m == 0xDA and data[a + 7] > 0 and data[a + 9] >> 4 == 0
    ]
    _, start, end = max(first_ac)
    eoi = segments[-1][1]
    return data[:eoi] + data[start:end] * scans + data[eoi:]


def header_flood(host: str, line: bytes = b"X-Pad: " + b"a" * 1000 + b"\r\n") -> Iterator[bytes]:
    """The head of a POST /predict whose headers never end: the request line, Host, then
    ``line`` forever (each yield is 64 of them)."""
    yield f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n".encode()
    block = line * 64
    while True:
        yield block
