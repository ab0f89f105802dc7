"""Exact conversion of a decoded Pillow image to 8-bit ``L`` or ``RGB``, or a refusal that says why.

Pillow's ``convert`` clips 16-bit samples, drops alpha onto whatever colour transparent pixels hold and reads
frame 0 of a stack silently; :func:`to_mode` handles those modes itself and refuses what has no defined
8-bit form (:class:`UnsupportedImage`). Used by the decoder (:mod:`medmnist_lit.data.decode`) and by
``predict`` on loose image files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "ALPHA_MODES",
    "PREMULTIPLIED_MODES",
    "SIXTEEN_BIT_MODES",
    "UnsupportedImage",
    "exif_orientation",
    "to_mode",
]


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
