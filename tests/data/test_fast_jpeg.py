"""The libjpeg-turbo fast path for plain JPEGs: the same pixels and the same bad-file reports as Pillow alone."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import medmnist_lit.data.decode as decode_module
from medmnist_lit.data.decode import Decoded, decode_listing
from medmnist_lit.data.fast_jpeg import jpeg_codec, plain_jpeg, plain_jpeg_headers
from medmnist_lit.data.layout import DataError
from medmnist_lit.data.listing import Listing, list_folder

pytestmark = pytest.mark.skipif(jpeg_codec() is None, reason="simplejpeg or a libjpeg-turbo Pillow is missing")


def pixels(h: int = 32, w: int = 32, *, rgb: bool = False, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: chroma subsampling and rounding both matter on them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 200 / w + yy * 50 / h)[..., None] if rgb else xx * 200 / w + yy * 50 / h
    if rgb:
        base = base * np.array([1.0, 0.6, 0.3]) + np.array([0, 60, 120])
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def jpeg(array: np.ndarray, mode: str | None = None, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def turbo_jpeg(array: np.ndarray, subsampling: str) -> bytes:
    """A JPEG with a chroma subsampling Pillow cannot write (4:4:0, 4:1:1), made by libjpeg-turbo."""
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(array), quality=90, colorsubsampling=subsampling)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def exif_rotated(array: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[274] = 6  # rotate 90° clockwise to display: the decoded image is h×w turned w×h
    return jpeg(array, exif=exif.tobytes())


def corrupt_scan(data: bytes) -> bytes:
    """Flip bits all over the entropy-coded data: libjpeg warns, Pillow decodes garbage or fails."""
    out = bytearray(data)
    for k in range(data.find(b"\xff\xda") + 20, len(data) - 10, 7):
        out[k] ^= 0x55
    return bytes(out)


def after_app0(data: bytes, insert: bytes) -> bytes:
    end = 4 + int.from_bytes(data[4:6], "big")
    return data[:end] + insert + data[end:]


def listing_of(root: Path, files: dict[str, bytes]) -> Listing:
    """Class ``A`` holds ``files`` (sorted by name); class ``B`` one plain gray JPEG of the same size."""
    for name, data in files.items():
        (root / "A").mkdir(parents=True, exist_ok=True)
        (root / "A" / name).write_bytes(data)
    (root / "B").mkdir(parents=True, exist_ok=True)
    (root / "B" / "z.jpeg").write_bytes(jpeg(pixels(seed=99)))
    return list_folder(root)


def counting_codec(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the images that libjpeg-turbo decodes (in this process: ``workers=1``)."""
    codec = jpeg_codec()
    assert codec is not None
    decode, header = codec
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(decode_module, "jpeg_codec", lambda: (counted, header))
    return calls


def both(listing: Listing, **options: Any) -> tuple[Decoded, Decoded]:
    """Decode with the fast path and with Pillow forced; the pixels, kept rows and bad files must be equal."""
    fast = decode_listing(listing, fast_jpeg=True, skip_bad=True, **options)
    pillow = decode_listing(listing, fast_jpeg=False, skip_bad=True, **options)
    np.testing.assert_array_equal(fast.images, pillow.images)
    assert (fast.keep is None) == (pillow.keep is None)
    if fast.keep is not None and pillow.keep is not None:
        np.testing.assert_array_equal(fast.keep, pillow.keep)
    assert fast.skipped == pillow.skipped
    return fast, pillow


GRAY = pixels()
RGB = pixels(rgb=True)
PLAIN: dict[str, Callable[[], bytes]] = {
    "gray": lambda: jpeg(GRAY),
    "rgb444": lambda: jpeg(RGB, subsampling=0),
    "rgb422": lambda: jpeg(RGB, subsampling=1),
    "rgb420": lambda: jpeg(RGB, subsampling=2),
    "restart": lambda: jpeg(RGB, subsampling=2, restart_marker_rows=1),
    "gray_restart": lambda: jpeg(GRAY, restart_marker_blocks=3),
}
ODD: dict[str, Callable[[], bytes]] = {
    "cmyk": lambda: jpeg(RGB, "CMYK"),
    "progressive_gray": lambda: jpeg(GRAY, progressive=True),
    "progressive_rgb": lambda: jpeg(RGB, progressive=True),
    "exif_square": lambda: exif_rotated(GRAY),
    "rgb440": lambda: turbo_jpeg(RGB, "440"),
    "rgb411": lambda: turbo_jpeg(RGB, "411"),
    "png": lambda: png(RGB),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
@pytest.mark.parametrize("channels", [1, 3])
def test_plain_jpegs_take_the_fast_path_with_pillows_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, channels: int
) -> None:
    data = PLAIN[name]()
    assert plain_jpeg(data)
    listing = listing_of(tmp_path, {"x.jpeg": data})
    calls = counting_codec(monkeypatch)
    fast, _ = both(listing, channels=channels)
    assert len(calls) == 2  # both images decoded by libjpeg-turbo, then by Pillow for the reference
    with Image.open(io.BytesIO(data)) as img:  # and the reference is plain Pillow
        np.testing.assert_array_equal(fast.images[0], np.asarray(img.convert("L" if channels == 1 else "RGB")))


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_files_go_through_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    data = ODD[name]()
    assert plain_jpeg(data) == (name in ("rgb440", "rgb411"))  # plain segments; the subsampling is refused later
    listing = listing_of(tmp_path, {"x.jpeg": data})
    calls = counting_codec(monkeypatch)
    for channels in (1, 3):
        both(listing, channels=channels)
    assert len(calls) == 2  # only B/z.jpeg, once per channel setting


def test_a_mix_with_bad_files_gives_the_same_pixels_and_reasons(tmp_path: Path) -> None:
    big = jpeg(pixels(64, 64, seed=3))
    files = {name + ".jpeg": make() for name, make in {**PLAIN, **ODD}.items() if name != "exif_square"}
    files |= {
        "truncated.jpeg": big[: len(big) * 2 // 3],
        "corrupt.jpeg": corrupt_scan(jpeg(pixels(seed=4))),
        "not_an_image.jpeg": b"\xff\xd8\xff\xe0 definitely not a JPEG",
        "empty.jpeg": b"",
        "short_jfif.jpeg": big[:2] + b"\xff\xe0\x00\x06JFIF" + big[2:],  # libjpeg accepts it, Pillow does not
        "partial_dqt.jpeg": big[:2] + b"\xff\xdb\x00\x0c\x01" + bytes(range(1, 10)) + big[2:],
        "junk_between_segments.jpeg": after_app0(big, b"\x00\x00"),
    }
    listing = listing_of(tmp_path, files)
    fast, _ = both(listing, image_size=16)
    reasons = {s["id"]: s["error"] for s in fast.skipped}
    assert {"A/truncated.jpeg", "A/not_an_image.jpeg", "A/empty.jpeg", "A/short_jfif.jpeg"} <= set(reasons)
    both(listing, image_size=16, channels=3)
    with pytest.raises(DataError) as fast_error:
        decode_listing(listing, fast_jpeg=True)
    with pytest.raises(DataError) as pillow_error:
        decode_listing(listing, fast_jpeg=False)
    assert str(fast_error.value) == str(pillow_error.value)


def test_segments_that_pillows_parser_refuses_or_skips_are_not_plain() -> None:
    data = jpeg(GRAY)
    assert plain_jpeg(data) and plain_jpeg(after_app0(data, b"\xff\xfe\x00\x05hi!"))  # a comment is fine
    assert not plain_jpeg(after_app0(data, b"\xff\xdb\x00\x0c\x01" + bytes(range(1, 10))))  # partial table
    assert not plain_jpeg(after_app0(data, b"\xff\xdb\x00\x44\x00" + bytes(range(1, 65)) + b"\x01"))
    assert not plain_jpeg(after_app0(data, b"\x00\x00"))  # junk Pillow skips and libjpeg warns about
    assert not plain_jpeg(data[:2] + b"\xff\xe0\x00\x06JFIF" + data[2:])  # too short for Pillow's parser
    assert not plain_jpeg(after_app0(data, b"\xff\xe2\x00\x08MPF\x00\x00\x00"))  # MPO: Pillow's MpoImageFile
    assert not plain_jpeg(data[: data.find(b"\xff\xda") + 4])  # the scan header is cut
    assert not plain_jpeg(data[:2] + b"\x00" + data[3:])
    sof = data.find(b"\xff\xc0")
    frame = data[sof : sof + 2 + int.from_bytes(data[sof + 2 : sof + 4], "big")]
    assert not plain_jpeg(data[:sof] + frame + data[sof:])  # two frame headers
    assert not plain_jpeg(data[: sof + 4] + b"\x0c" + data[sof + 5 :])  # 12-bit samples: Pillow refuses them
    assert not plain_jpeg(data[: sof + 3] + bytes([data[sof + 3] + 3]) + data[sof + 4 :])  # frame length is off


def test_header_blocks_are_read_once_and_bad_scans_behind_them_still_go_to_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files that repeat a header block byte for byte get its answer without a second walk or header call."""
    codec = jpeg_codec()
    assert codec is not None
    decode, header = codec
    headers: list[int] = []

    def counted(data: bytes) -> Any:
        headers.append(1)
        return header(data)

    monkeypatch.setattr(decode_module, "jpeg_codec", lambda: (decode, counted))
    good = jpeg(pixels(seed=1))
    block = plain_jpeg_headers(good)
    assert block and plain_jpeg_headers(jpeg(pixels(seed=2))) == block
    assert jpeg(pixels(seed=2))[:block] == good[:block]  # same encoder settings: the same header bytes
    files = {f"{i:02d}.jpeg": jpeg(pixels(seed=i)) for i in range(8)}
    files["09_corrupt.jpeg"] = corrupt_scan(good)
    files["10_cut_after_header.jpeg"] = good[:block]
    files["11_cut.jpeg"] = good[: len(good) // 2]
    files["12_rgb.jpeg"] = jpeg(RGB, subsampling=2)
    listing = listing_of(tmp_path, files)
    fast, _ = both(listing)  # same pixels and the same bad files as Pillow alone
    assert len(headers) == 2  # one gray block (12 files, class B's too), one colour block
    assert [entry["id"] for entry in fast.skipped] == [
        entry["id"] for entry in decode_listing(listing, fast_jpeg=False, skip_bad=True).skipped
    ]


@pytest.mark.parametrize("channels", [1, 3])
def test_resize_and_exif_rotation_match_pillow(tmp_path: Path, channels: int) -> None:
    files = {
        "a_gray_wide.jpeg": jpeg(pixels(24, 40)),
        "b_rgb420_tall.jpeg": jpeg(pixels(40, 24, rgb=True), subsampling=2),
        "c_exif_rotated.jpeg": exif_rotated(pixels(24, 40, seed=5)),
        "d_same_size.jpeg": jpeg(pixels(32, 32, seed=6)),
        "e_png.png": png(pixels(20, 20, seed=7)),
    }
    fast, _ = both(listing_of(tmp_path, files), channels=channels, image_size=32)
    assert fast.images.shape == ((6, 32, 32) if channels == 1 else (6, 32, 32, 3))


def test_mis_sized_images_are_reported_as_before(tmp_path: Path) -> None:
    listing = listing_of(tmp_path, {"a.jpeg": jpeg(GRAY), "b.jpeg": jpeg(pixels(16, 48, rgb=True))})
    messages = []
    for fast in (True, False):
        with pytest.raises(DataError, match="have different sizes") as error:
            decode_listing(listing, fast_jpeg=fast)
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "A/b.jpeg is 48×16" in messages[0]


def test_pillows_decompression_bomb_guard_still_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = listing_of(tmp_path, {"a.jpeg": jpeg(pixels(40, 40)), "b.jpeg": jpeg(GRAY)})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32 * 32)  # 40×40 is over the limit, 32×32 is not
    fast, _ = both(listing, image_size=32)
    assert [s["id"] for s in fast.skipped] == ["A/a.jpeg"] and "DecompressionBomb" in fast.skipped[0]["error"]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_processes_write_the_same_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    if start_method == "fork" and sys.platform != "linux":
        pytest.skip("fork is used on Linux only")
    files = {f"{i:03d}.jpeg": jpeg(pixels(rgb=i % 2 == 1, seed=i), subsampling=2) for i in range(30)}
    files["bad.jpeg"] = b"\xff\xd8\xff broken"
    listing = listing_of(tmp_path / "src", files)
    # Several write blocks per worker chunk (forked workers see this; spawned ones use the default).
    monkeypatch.setattr(decode_module, "WRITE_BLOCK_BYTES", 3 * 32 * 32)
    expected = decode_listing(listing, fast_jpeg=False, skip_bad=True)
    for fast in (True, False):
        got = decode_listing(
            listing,
            fast_jpeg=fast,
            skip_bad=True,
            workers=2,
            out_path=tmp_path / f"{fast}.npy",
            start_method=start_method,
        )
        assert got.workers == 2
        np.testing.assert_array_equal(got.images, expected.images)
        assert got.skipped == expected.skipped


def test_fast_jpeg_false_and_the_module_switch_force_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = listing_of(tmp_path, {"a.jpeg": jpeg(GRAY)})
    calls = counting_codec(monkeypatch)
    decode_listing(listing, fast_jpeg=False)
    monkeypatch.setattr(decode_module, "FAST_JPEG", False)
    decode_listing(listing)
    assert calls == []
    decode_listing(listing, fast_jpeg=True)  # an explicit argument wins over the module switch
    assert len(calls) == 2


def test_without_simplejpeg_pillow_decodes_everything_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    listing = listing_of(tmp_path, {"a.jpeg": jpeg(GRAY), "b.jpeg": jpeg(RGB)})
    expected = decode_listing(listing, fast_jpeg=False)
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # makes `import simplejpeg` raise ImportError
    jpeg_codec.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger="medmnist_lit"):
            first = decode_listing(listing)
            second = decode_listing(listing, fast_jpeg=True)
    finally:
        jpeg_codec.cache_clear()
    np.testing.assert_array_equal(first.images, expected.images)
    np.testing.assert_array_equal(second.images, expected.images)
    lines = [r for r in caplog.records if "simplejpeg" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
