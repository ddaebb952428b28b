"""The decoded size of an encoded image, read from its header alone.

`export.serve` admits `DT_STRING` inputs holding encoded images (the
`serve_image_bytes` signature) only when the pixels they decode to fit its
limits, and it must know that before TensorFlow decodes them: a 700 KB PNG
can decode to 23000 x 23000 pixels. `image_size(data)` reads the header of
each format `tf.io.decode_image` takes -- JPEG, PNG, GIF, BMP and WebP,
told apart by the same magic bytes -- without decoding anything, in plain
Python (no TensorFlow, no Pillow).

`pixels` counts what a decoder allocates, not only what it returns: a GIF
or an animated WebP counts every frame (giflib decodes them all even when
only the first is kept).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# SOF markers: baseline, extended, progressive, lossless, arithmetic
# variants. 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) are not frames.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_JPEG_BARE = set(range(0xD0, 0xD8)) | {0x01}


class ImageHeaderError(ValueError):
    """The data starts like an image format but its header is unreadable:
    a decoder would refuse it too."""


@dataclass(frozen=True)
class ImageSize:
    """`format` (`"png"`, ...), the decoded `width` x `height`, the
    `pixels` a decoder allocates (all frames of an animation), and
    whether it is an `animated` WebP (TensorFlow 2.21's WebP decoder
    corrupts the heap on those: the server refuses them)."""

    format: str
    width: int
    height: int
    pixels: int
    animated: bool = False


def sniff(data: bytes) -> str | None:
    """The format `tf.io.decode_image` would pick for `data`, or None."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(b"GIF8"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes) -> ImageSize | None:
    """The decoded size of `data`, or None when it is no image format the
    decoder knows (it then fails on its own). Raises `ImageHeaderError`
    for an image whose header is truncated or malformed."""
    kind = sniff(data)
    if kind is None:
        return None
    reader = _READERS[kind]
    try:
        width, height, pixels, *animated = reader(data)
    except (struct.error, IndexError):
        raise ImageHeaderError(
            f"the {kind.upper()} header is truncated"
        ) from None
    if width <= 0 or height <= 0:
        raise ImageHeaderError(
            f"the {kind.upper()} header gives a size of {width} x {height}"
        )
    return ImageSize(kind, width, height, max(pixels, width * height),
                     bool(animated and animated[0]))


def _png(data: bytes):
    # Signature, then the IHDR chunk: length, "IHDR", width, height.
    if data[12:16] != b"IHDR":
        raise ImageHeaderError("the PNG does not start with an IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return width, height, width * height


def _jpeg(data: bytes):
    offset = 2
    while True:
        if data[offset] != 0xFF:
            raise ImageHeaderError(
                f"the JPEG has no marker at byte {offset}")
        while data[offset] == 0xFF:  # fill bytes
            offset += 1
        marker = data[offset]
        offset += 1
        if marker in _JPEG_BARE:
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before a frame
            raise ImageHeaderError("the JPEG has no frame header (SOF)")
        (length,) = struct.unpack(">H", data[offset:offset + 2])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[offset + 3:offset + 7])
            return width, height, width * height
        if length < 2:
            raise ImageHeaderError(f"the JPEG has a segment of length "
                                   f"{length} at byte {offset}")
        offset += length


def _gif(data: bytes):
    width, height, flags = struct.unpack("<HHB", data[6:11])
    offset = 13
    if flags & 0x80:  # global colour table
        offset += 3 * (2 << (flags & 7))
    pixels = width * height
    frames = 0
    while offset < len(data):
        block = data[offset]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            offset = _skip_sub_blocks(data, offset + 2)
        elif block == 0x2C:  # image descriptor
            frame_w, frame_h, frame_flags = struct.unpack(
                "<HHB", data[offset + 5:offset + 10])
            frames += 1
            pixels += frame_w * frame_h
            offset += 10
            if frame_flags & 0x80:  # local colour table
                offset += 3 * (2 << (frame_flags & 7))
            offset = _skip_sub_blocks(data, offset + 1)  # LZW code size
        else:
            break  # garbage after the frames: the decoder stops here too
    if frames == 0:
        raise ImageHeaderError("the GIF has no image")
    return width, height, pixels


def _skip_sub_blocks(data: bytes, offset: int) -> int:
    while True:
        size = data[offset]
        offset += 1
        if size == 0:
            return offset
        offset += size


def _bmp(data: bytes):
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    height = abs(height)  # negative: stored top-down
    return width, height, width * height


def _webp(data: bytes):
    offset = 12
    size = None
    frames = 0
    animated = False
    while offset + 8 <= len(data):
        chunk = data[offset:offset + 4]
        (length,) = struct.unpack("<I", data[offset + 4:offset + 8])
        body = offset + 8
        if chunk == b"VP8X":
            animated = bool(data[body] & 0x02)
            width = 1 + int.from_bytes(data[body + 4:body + 7], "little")
            height = 1 + int.from_bytes(data[body + 7:body + 10], "little")
            size = (width, height)
        elif chunk == b"ANMF":
            frames += 1
        elif chunk == b"VP8 " and size is None:
            if data[body + 3:body + 6] != b"\x9d\x01\x2a":
                raise ImageHeaderError("the WebP VP8 frame tag is missing")
            width, height = struct.unpack("<HH", data[body + 6:body + 10])
            size = (width & 0x3FFF, height & 0x3FFF)
        elif chunk == b"VP8L" and size is None:
            if data[body] != 0x2F:
                raise ImageHeaderError("the WebP VP8L signature is missing")
            bits = int.from_bytes(data[body + 1:body + 5], "little")
            size = (1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
        offset = body + length + (length & 1)
    if size is None:
        raise ImageHeaderError("the WebP has no VP8, VP8L or VP8X chunk")
    width, height = size
    return width, height, width * height * max(frames, 1), \
        animated or frames > 0


_READERS = {"png": _png, "jpeg": _jpeg, "gif": _gif, "bmp": _bmp,
            "webp": _webp}
