"""The decoder's fast path for plain JPEGs: libjpeg-turbo through ``simplejpeg``, with Pillow's exact pixels.

Pillow's per-file overhead (open, parse, tile set-up) is most of the cost of a 64×64 JPEG, so plain baseline
JPEGs (:func:`plain_jpeg`) are decoded by libjpeg-turbo (:func:`decode_plain_jpeg`) with the same settings as
Pillow (accurate integer IDCT, fancy upsampling) and the same library, so the pixels are bit-identical; every
other file, and any JPEG libjpeg-turbo warns about, goes through Pillow (:mod:`medmnist_lit.data.convert`).
:func:`jpeg_codec` is ``None`` where this cannot hold (no ``simplejpeg``, a Pillow not built on libjpeg-turbo).

Standard library only at module level (simplejpeg and Pillow are imported when decoding).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["JpegHeaders", "decode_plain_jpeg", "jpeg_codec", "plain_jpeg", "plain_jpeg_headers"]

logger = logging.getLogger(__name__)

#: libjpeg's colour space of a plain JPEG → the ``simplejpeg`` output that Pillow's decoder also asks for.
_JPEG_OUTPUT = {"Gray": "GRAY", "YCbCr": "RGB"}
#: Chroma subsamplings decoded by the fast path ("Gray": none); rarer ones (4:4:0, 4:1:1) go through Pillow.
_JPEG_SUBSAMPLINGS = frozenset({"Gray", "444", "422", "420"})
#: Segments allowed before the first scan: DHT, DQT, DRI, APP0 (JFIF), COM. EXIF (orientation), ICC, MPF (MPO),
#: Adobe (colour transform), other APPn and every non-baseline frame type send the file to Pillow.
_PLAIN_SEGMENTS = frozenset({0xC4, 0xDB, 0xDD, 0xE0, 0xFE})


@functools.cache
def jpeg_codec() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """``simplejpeg``'s ``(decode_jpeg, decode_jpeg_header)``, or ``None`` where the fast path cannot run exactly.

    ``None`` when simplejpeg does not import (a platform without a wheel) or Pillow's JPEG codec is not
    libjpeg-turbo (IJG libjpeg 9 upsamples and rounds differently); decoding then uses Pillow only, with the same
    pixels, so one debug line is all that is said.
    """
    try:
        import simplejpeg
    except Exception as exc:  # ImportError, or a broken binary (OSError): Pillow decodes everything
        logger.debug("simplejpeg is not available (%s); decoding every image with Pillow", exc)
        return None
    from PIL import features

    if not features.check_feature("libjpeg_turbo"):
        logger.debug("Pillow's JPEG codec is not libjpeg-turbo; decoding every image with Pillow")
        return None
    return simplejpeg.decode_jpeg, simplejpeg.decode_jpeg_header


def plain_jpeg(data: bytes) -> bool:
    """Whether Pillow opens ``data`` as a plain 8-bit baseline ``L``/``RGB`` JPEG that libjpeg-turbo decodes alike."""
    return plain_jpeg_headers(data) > 0


def plain_jpeg_headers(data: bytes) -> int:
    """Length of a plain JPEG's headers, through its first scan header (what :func:`plain_jpeg` reads); 0 if not plain.

    Walks the segments before the first scan (a few per file): non-zero only for SOF0/SOF1 (Huffman, sequential) with
    8-bit samples and 1 or 3 components, and only DHT, DQT, DRI, APP0 and COM segments, each complete and as
    Pillow's parser accepts it (full quantization tables, a JFIF header long enough). Progressive, lossless,
    arithmetic-coded, CMYK/YCCK, EXIF-oriented, MPO and malformed files answer 0 and go through Pillow.
    """
    if not data.startswith(b"\xff\xd8\xff"):  # Pillow's own test for a JPEG
        return 0
    pos, end, frame = 2, len(data), False
    while pos + 4 <= end:
        if data[pos] != 0xFF:  # junk between segments: Pillow skips it, libjpeg warns
            return 0
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = data[pos + 2] << 8 | data[pos + 3]
        stop = pos + 2 + length
        if length < 2 or stop > end:
            return 0
        if marker == 0xDA:  # start of scan: everything Pillow parses has been seen
            return stop if frame else 0
        if marker in (0xC0, 0xC1):
            if frame or length < 8 or data[pos + 4] != 8 or data[pos + 9] not in (1, 3):
                return 0
            if length != 8 + 3 * data[pos + 9]:
                return 0
            frame = True
        elif marker == 0xDB:  # Pillow refuses a partial table, libjpeg pads it: leave those to Pillow
            q = pos + 4
            while q < stop:
                q += 65 if data[q] < 16 else 129
            if q != stop:
                return 0
        elif marker == 0xE0:
            if length < 9 and data.startswith(b"JFIF", pos + 4):  # too short for Pillow's JFIF parser
                return 0
        elif marker not in _PLAIN_SEGMENTS:
            return 0
        pos = stop
    return 0


class JpegHeaders:
    """The header of each plain JPEG (:func:`plain_jpeg` and libjpeg-turbo's header), remembered per header block.

    Files from one encoder repeat their headers byte for byte (Medical MNIST: 3 distinct blocks of 328 bytes in
    58,954 files), and both checks read nothing past the first scan header, so a file that starts with a block
    seen before gets the same answer without the segment walk and the header call (~2.7 of ~21 µs per 64×64 image).

    Args:
        read_header: ``simplejpeg.decode_jpeg_header`` (:func:`jpeg_codec`'s second item).
    """

    #: Distinct header blocks remembered (a file with another block is simply walked).
    LIMIT = 16

    def __init__(self, read_header: Callable[..., Any]) -> None:
        self._read_header = read_header
        self._known: list[tuple[bytes, tuple[int, int, str, str] | None]] = []

    def __call__(self, data: bytes) -> tuple[int, int, str, str] | None:
        """``(height, width, colour space, subsampling)`` of a plain JPEG; ``None``: Pillow decodes the file."""
        for block, known in self._known:
            if data.startswith(block):
                return known
        length = plain_jpeg_headers(data)
        if not length:
            return None
        header: tuple[int, int, str, str] | None
        try:
            height, width, space, subsampling = self._read_header(data)
            header = (height, width, space, subsampling)
        except Exception:  # libjpeg-turbo's own header checks: Pillow decides
            header = None
        if len(self._known) < self.LIMIT:
            self._known.append((data[:length], header))
        return header


def decode_plain_jpeg(
    data: bytes,
    header: tuple[int, int, str, str],
    dest: memoryview,
    mode: str,
    size: tuple[int, int],
    resize: bool,
    decode: Callable[..., Any],
    max_pixels: int | None,
) -> bool | tuple[int, int]:
    """Decode a :func:`plain_jpeg` with libjpeg-turbo into ``dest``, with exactly the pixels of the Pillow path.

    Grayscale decodes to GRAY and colour (YCbCr) to RGB, as Pillow's decoder does; a different ``mode`` is then
    converted and a resize done by Pillow itself on those pixels (``convert``, bilinear ``resize``).

    Args:
        data: The JPEG bytes (``plain_jpeg(data)`` is true).
        header: Its ``(height, width, colour space, subsampling)`` (:class:`JpegHeaders`).
        dest: The image's row of the output, ``size`` and ``mode`` as bytes.
        mode: ``"L"`` or ``"RGB"``.
        size: Expected ``(width, height)``.
        resize: Resize to ``size`` instead of reporting another size.
        decode: ``simplejpeg.decode_jpeg`` (:func:`jpeg_codec`'s first item).
        max_pixels: ``PIL.Image.MAX_IMAGE_PIXELS``: larger images go to Pillow, whose guard reports them.

    Returns:
        True when written; ``(width, height)`` of an image of another size (not decoded, as with Pillow);
        False when Pillow must decode it: an unusual colour space or subsampling, or anything libjpeg-turbo
        warns about (corrupt or truncated data), which Pillow then decodes or reports as before.
    """
    height, width, space, subsampling = header
    output = _JPEG_OUTPUT.get(space)
    if output is None or subsampling not in _JPEG_SUBSAMPLINGS or (max_pixels and width * height > max_pixels):
        return False  # another colour space or subsampling, or too large: Pillow decides
    if (width, height) != size and not resize:
        return width, height
    try:
        if (width, height) == size and output == ("GRAY" if mode == "L" else "RGB"):
            # Pillow's decoder settings (accurate integer IDCT, fancy upsampling), straight into the output row.
            decode(data, output, fastdct=False, fastupsample=False, strict=True, buffer=dest)
            return True
        pixels = decode(data, output, fastdct=False, fastupsample=False, strict=True)
    except Exception:  # strict: any libjpeg warning (corrupt data) is an error here, and Pillow decides
        return False
    from PIL import Image

    img = Image.fromarray(pixels[:, :, 0] if output == "GRAY" else pixels)
    if img.mode != mode:
        img = img.convert(mode)
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    dest[:] = img.tobytes()
    return True
