"""Exact conversion of a decoded Pillow image to 8-bit ``L`` or ``RGB``, or a refusal that says why.

Pillow's ``convert`` clips 16-bit samples, drops alpha onto whatever colour transparent pixels hold and reads
frame 0 of a stack silently; :func:`to_mode` handles those modes itself and refuses what has no defined
8-bit form (:class:`UnsupportedImage`). Used by the decoder (:mod:`medmnist_lit.data.decode`) and by
``predict`` on loose image files.

:func:`decode_plain_jpeg` is the decoder's fast path: Pillow's per-file overhead (open, parse, tile set-up) is
most of the cost of a 64×64 JPEG, so plain baseline JPEGs (:func:`plain_jpeg`) are decoded by libjpeg-turbo
through ``simplejpeg`` instead, with the same settings as Pillow (accurate integer IDCT, fancy upsampling) and the
same library, so the pixels are bit-identical; every other file, and any JPEG libjpeg-turbo warns about, goes
through Pillow as before.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "ALPHA_MODES",
    "PREMULTIPLIED_MODES",
    "SIXTEEN_BIT_MODES",
    "UnsupportedImage",
    "decode_plain_jpeg",
    "exif_orientation",
    "jpeg_codec",
    "plain_jpeg",
    "to_mode",
]

logger = logging.getLogger(__name__)


class UnsupportedImage(ValueError):
    """An image that decodes but has no defined conversion to 8-bit ``L``/``RGB``; the message says why."""


#: Modes holding 16-bit samples (``I`` is how some Pillow versions open 16-bit PNGs; it is checked for range).
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
#: Modes with straight (unassociated) alpha, and with premultiplied alpha.
ALPHA_MODES = frozenset({"LA", "PA", "RGBA"})
PREMULTIPLIED_MODES = frozenset({"La", "RGBa"})
#: EXIF Orientation (tag 274) values and the transpose that undoes them (as ``ImageOps.exif_transpose``).
_ORIENTATION = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def to_mode(img: Any, mode: str) -> Any:
    """Convert a decoded image to ``mode`` (``"L"``/``"RGB"``) exactly, or raise :class:`UnsupportedImage`.

    - multi-frame files (TIFF stacks, animated GIF/PNG/WebP) are refused: Pillow would silently read frame 0
      (MPO, the format of phone photos with a preview, is kept: its first frame is the picture);
    - EXIF orientation is applied (as ``ImageOps.exif_transpose``), so a phone photo of a film stands upright;
    - 16-bit samples (``I;16*``, and ``I`` within 0..65535) become ``round(v / 257)``: exact, the same for every
      image (65535 → 255), never clipped; ``I`` outside 0..65535 and float ``F`` (no defined range) are refused;
    - alpha (``LA``, ``PA``, ``RGBA``, a ``transparency`` entry; premultiplied ``La``/``RGBa``) is composited
      over black, ``round(c * a / 255)``: transparent pixels are background;
    - every other mode (``1``, ``P``, ``CMYK``, ``YCbCr``, ``RGBX``, ``HSV``, ``LAB`` ...) uses Pillow's own
      conversion, through RGB where Pillow defines no direct one (``LAB``, via ImageCms).

    16-bit RGB(A) PNGs arrive from Pillow as 8-bit ``RGB``/``RGBA`` already (its decoder keeps the high byte).
    """
    from PIL import Image

    if img.format == "JPEG" and "exif" not in img.info:  # L/RGB/CMYK: single frame, Pillow's conversion is exact
        return img.convert(mode)
    if getattr(img, "is_animated", False) and img.format != "MPO":
        raise UnsupportedImage(
            f"{img.n_frames} frames ({img.format} stack or animation); only single-frame images are read, "
            "save each frame as its own file"
        )
    orientation = exif_orientation(img)
    src = img.mode
    if src in SIXTEEN_BIT_MODES:
        img = Image.fromarray(_sixteen_to_eight(np.asarray(img), src))
    elif src == "F":
        raise UnsupportedImage(
            "mode F (32-bit float pixels) has no defined 0..255 range; save it as 8- or 16-bit integers"
        )
    elif src in PREMULTIPLIED_MODES:  # colour already multiplied by alpha: that *is* the image over black
        pixels = np.asarray(img)[..., :-1]
        img = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if src == "La" else pixels))
    elif src in ALPHA_MODES or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        img = Image.fromarray(((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8))
    if img.mode != mode:
        try:
            img = img.convert(mode)
        except ValueError:  # e.g. LAB: Pillow converts it to RGB only
            try:
                img = img.convert("RGB").convert(mode)
            except (ValueError, ImportError) as exc:
                raise UnsupportedImage(f"mode {src}: Pillow defines no conversion to {mode} ({exc})") from exc
    if orientation:
        img = img.transpose(Image.Transpose[_ORIENTATION[orientation]])
    return img


def _sixteen_to_eight(pixels: np.ndarray, src: str) -> np.ndarray:
    """16-bit samples → uint8 ``round(v / 257)`` (257 is odd: no ties, so ``(v + 128) // 257`` is exact)."""
    if pixels.dtype.kind == "i" and pixels.size:
        low, high = int(pixels.min()), int(pixels.max())
        if low < 0 or high > 65535:
            raise UnsupportedImage(
                f"mode {src} pixels span {low}..{high}, outside the 16-bit range 0..65535 (no defined scaling "
                "to 8 bits); save it as 8- or 16-bit"
            )
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def exif_orientation(img: Any) -> int:
    """The EXIF orientation that needs undoing (2..8), else 0; a corrupt EXIF block counts as no orientation."""
    if "exif" not in img.info and img.format != "TIFF":
        return 0
    try:
        value = img.getexif().get(274, 1)
    except Exception:  # malformed EXIF must not make a decodable image "bad"
        return 0
    return value if value in _ORIENTATION else 0


# ------------------------------------------------------------------------ fast path for plain JPEGs
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
    """Whether Pillow opens ``data`` as a plain 8-bit baseline ``L``/``RGB`` JPEG that libjpeg-turbo decodes alike.

    Walks the segments before the first scan (a few per file): True only for SOF0/SOF1 (Huffman, sequential) with
    8-bit samples and 1 or 3 components, and only DHT, DQT, DRI, APP0 and COM segments, each complete and as
    Pillow's parser accepts it (full quantization tables, a JFIF header long enough). Progressive, lossless,
    arithmetic-coded, CMYK/YCCK, EXIF-oriented, MPO and malformed files answer False and go through Pillow.
    """
    if not data.startswith(b"\xff\xd8\xff"):  # Pillow's own test for a JPEG
        return False
    pos, end, frame = 2, len(data), False
    while pos + 4 <= end:
        if data[pos] != 0xFF:  # junk between segments: Pillow skips it, libjpeg warns
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = data[pos + 2] << 8 | data[pos + 3]
        stop = pos + 2 + length
        if length < 2 or stop > end:
            return False
        if marker == 0xDA:  # start of scan: everything Pillow parses has been seen
            return frame
        if marker in (0xC0, 0xC1):
            if frame or length < 8 or data[pos + 4] != 8 or data[pos + 9] not in (1, 3):
                return False
            if length != 8 + 3 * data[pos + 9]:
                return False
            frame = True
        elif marker == 0xDB:  # Pillow refuses a partial table, libjpeg pads it: leave those to Pillow
            q = pos + 4
            while q < stop:
                q += 65 if data[q] < 16 else 129
            if q != stop:
                return False
        elif marker == 0xE0:
            if length < 9 and data.startswith(b"JFIF", pos + 4):  # too short for Pillow's JFIF parser
                return False
        elif marker not in _PLAIN_SEGMENTS:
            return False
        pos = stop
    return False


def decode_plain_jpeg(
    data: bytes,
    dest: memoryview,
    mode: str,
    size: tuple[int, int],
    resize: bool,
    codec: tuple[Callable[..., Any], Callable[..., Any]],
    max_pixels: int | None,
) -> bool | tuple[int, int]:
    """Decode a :func:`plain_jpeg` with libjpeg-turbo into ``dest``, with exactly the pixels of the Pillow path.

    Grayscale decodes to GRAY and colour (YCbCr) to RGB, as Pillow's decoder does; a different ``mode`` is then
    converted and a resize done by Pillow itself on those pixels (``convert``, bilinear ``resize``).

    Args:
        data: The JPEG bytes (``plain_jpeg(data)`` is true).
        dest: The image's row of the output, ``size`` and ``mode`` as bytes.
        mode: ``"L"`` or ``"RGB"``.
        size: Expected ``(width, height)``.
        resize: Resize to ``size`` instead of reporting another size.
        codec: :func:`jpeg_codec`'s pair.
        max_pixels: ``PIL.Image.MAX_IMAGE_PIXELS``: larger images go to Pillow, whose guard reports them.

    Returns:
        True when written; ``(width, height)`` of an image of another size (not decoded, as with Pillow);
        False when Pillow must decode it: an unusual colour space or subsampling, or anything libjpeg-turbo
        warns about (corrupt or truncated data), which Pillow then decodes or reports as before.
    """
    decode, header = codec
    try:
        height, width, space, subsampling = header(data)
        output = _JPEG_OUTPUT[space]
    except Exception:  # libjpeg-turbo's own header checks, or another colour space: Pillow decides
        return False
    if subsampling not in _JPEG_SUBSAMPLINGS or (max_pixels and width * height > max_pixels):
        return False
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
