"""Fonts for figure text in any script: a fallback list of installed fonts, and quiet drawing when none has a glyph.

Class names come from folder names and may be Chinese, Cyrillic, Arabic...; DejaVu Sans (Matplotlib's default)
covers Latin, Greek, Cyrillic and Arabic but no CJK. Matplotlib (≥ 3.6) takes each glyph from the first family in
``font.family`` that has it, so :func:`font_families` lists DejaVu Sans, then the installed fonts of
:data:`FALLBACKS`, then any other installed font that covers a character still missing. A character no installed
font has is drawn by Matplotlib's last-resort font (a box) without the "Glyph … missing from font" warning on the
console (:func:`quiet_glyphs`); it is logged once at debug level instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterable, Iterator

__all__ = ["FALLBACKS", "PRIMARY", "font_families", "quiet_glyphs"]

log = logging.getLogger("medmnist_lit")

#: The first family of every figure: Matplotlib's bundled default, so figures look the same on every machine.
PRIMARY = "DejaVu Sans"

#: Families tried after :data:`PRIMARY`, where installed: Noto (Linux), then the CJK and wide-coverage fonts that
#: Windows and macOS ship.
FALLBACKS = (
    "Noto Sans",
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Noto Sans SC",
    "Noto Sans JP",
    "Noto Sans Arabic",
    "Noto Sans Hebrew",
    "Noto Sans Devanagari",
    "Noto Sans Thai",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "Microsoft YaHei",
    "SimHei",
    "Yu Gothic",
    "Malgun Gothic",
    "Nirmala UI",
    "Segoe UI",
    "PingFang SC",
    "Hiragino Sans GB",
    "Apple SD Gothic Neo",
    "Arial Unicode MS",
)

#: Families found to cover characters of earlier figures (kept for the process: tick labels are drawn later).
_found: list[str] = []
#: Characters no installed font has (searched once per process: the search reads every font file).
_uncovered: set[int] = set()


def _installed() -> dict[str, str]:
    """Installed family name → the file of its regular face (read fresh: fonts may be added at run time)."""
    from matplotlib import font_manager

    files: dict[str, str] = {}
    for entry in font_manager.fontManager.ttflist:
        regular = entry.style == "normal" and entry.weight in (400, "normal", "regular")
        if entry.name not in files or regular:
            files[entry.name] = entry.fname
    return files


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    """Code points a font file has glyphs for (empty if it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def font_families(texts: Iterable[str] = ()) -> list[str]:
    """The ``font.family`` fallback list for figures showing ``texts`` (installed families only).

    Args:
        texts: Labels the figure will show (e.g. class names); characters no listed font covers make the other
            installed fonts be searched for one that does (remembered for later figures of the process).
    """
    installed = _installed()
    families = list(dict.fromkeys(f for f in (PRIMARY, *FALLBACKS, *_found) if f in installed))
    wanted = {ord(c) for text in texts for c in str(text) if c.isprintable() and not c.isspace()}
    covered: set[int] = set()
    for family in families:
        covered |= _charmap(installed[family]) & wanted
    missing = wanted - covered - _uncovered
    for family in sorted(set(installed) - set(families)) if missing else ():
        has = _charmap(installed[family]) & missing
        if has and not family.startswith("Last Resort"):  # Matplotlib's box-drawing font: the last resort anyway
            families.append(family)
            _found.append(family)
            missing -= has
            if not missing:
                break
    if missing:
        _uncovered.update(missing)
        text = "".join(sorted(map(chr, missing)))
        log.debug("no installed font has %r: drawn as boxes; install e.g. Noto Sans CJK to see them in figures", text)
    return families or [PRIMARY]


@contextlib.contextmanager
def quiet_glyphs() -> Iterator[None]:
    """Draw without Matplotlib's "Glyph … missing from font" warnings (the glyph is drawn as a box)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        yield
