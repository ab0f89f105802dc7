"""Bad data inputs: npz labels, image modes and oddities, symlinks — each converted exactly or refused by name."""

from __future__ import annotations

import io
import itertools
import os
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from datagen import make_image_folder, make_npz, synthetic_pixels
from PIL import Image, ImageOps

from medmnist_lit.data.arrays import read_npz, to_luma
from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.convert import to_mode
from medmnist_lit.data.decode import decode_listing
from medmnist_lit.data.layout import DataError
from medmnist_lit.data.listing import list_folder
from medmnist_lit.data.sources import read_folder

ROOT = Path(__file__).resolve().parents[2]


# -------------------------------------------------------------------------------------------- labels
def binary_npz(path: Path, train_labels: list[float], dtype: str = "int64") -> Path:
    """A two-class npz whose 12 training labels are ``train_labels`` (val/test hold 0 and 1)."""
    return make_npz(path, num_classes=2, train_labels=np.array(train_labels, dtype).reshape(12, 1))


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (
            [0, 1] * 5 + [1, 7],
            r"x\.npz': 'train_labels' holds 7 \(1 image\) but the other labels are 0–1: 5 classes would be empty "
            r"\(2–6\); fix the labels",
        ),
        ([0, 1] * 5 + [100_000] * 2, r"holds 100000 \(2 images\) .* 99,998 classes would be empty \(2–99999\)"),
        ([-1, 0] + [0, 1] * 5, r"'train_labels' in .*x\.npz' holds negative label -1 \(1 image\); .*non-negative"),
    ],
    ids=["stray-7-in-binary", "label-100000", "negative"],
)
def test_npz_labels_outside_0_to_k_are_named(tmp_path: Path, labels: list[int], match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_npz(binary_npz(tmp_path / "x.npz", labels))


def test_npz_labels_starting_at_1_suggest_the_shift(tmp_path: Path) -> None:
    ones = {f"{s}_labels": np.array([1, 2] * (n // 2)).reshape(n, 1) for s, n in (("train", 12), ("val", 4))}
    path = make_npz(tmp_path / "x.npz", num_classes=2, test_labels=np.array([[1], [2], [1], [2]]), **ones)
    with pytest.raises(DataError, match=r"no label 0: class 0 would be empty; .* 0\.\.1 \(subtract 1 from every"):
        read_npz(path)


def test_npz_stray_labels_in_several_keys_listed_with_counts(tmp_path: Path) -> None:
    path = make_npz(
        tmp_path / "x.npz",
        num_classes=2,
        train_labels=np.array([0, 1] * 5 + [9, 5]).reshape(12, 1),
        test_labels=np.array([[0], [9], [1], [0]]),
    )
    with pytest.raises(DataError, match=r"'train_labels' and 'test_labels' hold 5 \(1 image\), 9 \(2 images\) "):
        read_npz(path)


def test_npz_float_labels_integral_accepted_fractional_refused(tmp_path: Path) -> None:
    data = read_npz(binary_npz(tmp_path / "ok.npz", [0.0, 1.0] * 6, "float32"))
    assert data.labels.dtype == np.int64 and data.num_classes == 2 and data.labels[:12].tolist() == [0, 1] * 6
    with pytest.raises(DataError, match=r"'train_labels' .* holds non-integer label 0\.5 \(6 images"):
        read_npz(binary_npz(tmp_path / "half.npz", [0.5, 1.0] * 6, "float32"))
    with pytest.raises(DataError, match=r"non-integer label nan"):
        read_npz(binary_npz(tmp_path / "nan.npz", [np.nan] + [0.0, 1.0] * 5 + [1.0], "float64"))


def test_npz_uint64_label_beyond_int64_is_not_wrapped(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"holds 18446744073709551615 \(1 image\)"):
        read_npz(binary_npz(tmp_path / "x.npz", [0, 1] * 5 + [1, 2**64 - 1], "uint64"))


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_prepare_with_label_1e9_fails_clearly_under_2gb(tmp_path: Path) -> None:
    """Memory stays bounded by the data, not by label values (the old code grew to ~23 GB and was killed)."""
    bad = binary_npz(tmp_path / "huge.npz", [0, 1] * 5 + [1, 10**9])
    good = binary_npz(tmp_path / "good.npz", [0, 1] * 6)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def prepare(path: Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "medmnist_lit", "prepare", "--data.source", str(path)]
        cmd += ["--data.cache_dir", str(tmp_path / "cache")]
        return subprocess.run(
            cmd, capture_output=True, text=True, env=env, preexec_fn=_limit_address_space, timeout=120, check=False
        )

    result = prepare(bad)
    assert result.returncode == 2, result.stderr
    assert "'train_labels' holds 1000000000 (1 image) but the other labels are 0–1" in result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]
    result = prepare(good)  # the limit itself leaves room for a normal prepare
    assert result.returncode == 0, result.stderr
    assert "20 images" in result.stdout


# ---------------------------------------------------------------------------------------- npz pixels
def test_npz_uint16_images_scaled_not_wrapped(tmp_path: Path) -> None:
    ramp = np.arange(0, 65536, 64, dtype=np.uint16)[:768].reshape(12, 8, 8)
    data = read_npz(make_npz(tmp_path / "x.npz", train_images=ramp))
    np.testing.assert_array_equal(data.images[:12], np.round(ramp / 257).astype(np.uint8))


def test_npz_wide_integer_images_exact_or_refused(tmp_path: Path) -> None:
    pixels = synthetic_pixels(12, 8)
    data = read_npz(make_npz(tmp_path / "ok.npz", train_images=pixels.astype(np.int64)))
    np.testing.assert_array_equal(data.images[:12], pixels)
    with pytest.raises(DataError, match=r"'train_images' .* is int32 with values 0\.\.256, outside 0\.\.255"):
        read_npz(make_npz(tmp_path / "x.npz", train_images=np.full((12, 8, 8), 256, np.int32) * (pixels > 0)))


# ---------------------------------------------------------------------------------------- image modes
def folder_with(tmp_path: Path, name: str, image: Image.Image | bytes, **save: object) -> Path:
    """Class ``A`` of two ordinary JPEGs of the same size and class ``B`` holding only ``name`` (from ``image``)."""
    root = tmp_path / "src"
    (root / "A").mkdir(parents=True)
    (root / "B").mkdir()
    if isinstance(image, bytes):
        (root / "B" / name).write_bytes(image)
    else:
        image.save(root / "B" / name, **save)
    with Image.open(root / "B" / name) as saved:
        w, h = saved.size
    for i, pixels in enumerate(synthetic_pixels(2, max(w, h))):
        Image.fromarray(pixels[:h, :w]).save(root / "A" / f"{i:06d}.jpeg")
    return root


def decoded(tmp_path: Path, name: str, image: Image.Image | bytes, channels: int = 1, **save: object) -> np.ndarray:
    """The pixels that decoding gives for ``image`` saved as ``name``."""
    data = read_folder(folder_with(tmp_path, name, image, **save), channels=channels)
    assert data.ids[-1] == f"B/{name}"
    return np.asarray(data.images[-1])


def refused(tmp_path: Path, name: str, image: Image.Image | bytes, **save: object) -> str:
    """The error message that decoding ``image`` saved as ``name`` gives."""
    with pytest.raises(DataError) as info:
        read_folder(folder_with(tmp_path, name, image, **save))
    message = str(info.value)
    assert f"B/{name} (" in message and "\n" not in message
    return message


RAMP16 = np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16) + np.arange(16, dtype=np.uint16).reshape(16, 1)
RAMP16[-1, -1] = 65535


def over_black(pixels: np.ndarray) -> np.ndarray:
    """Colour channels composited over black by their alpha (the last channel): ``round(c * a / 255)``."""
    return ((pixels[..., :-1].astype(np.uint16) * pixels[..., -1:] + 127) // 255).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_grayscale_scaled_exactly(tmp_path: Path, fmt: str) -> None:
    image = Image.fromarray(RAMP16)  # I;16
    expected = np.round(RAMP16 / 257).astype(np.uint8)
    assert expected.max() == 255 and np.count_nonzero(expected == 255) < 5  # the old code made 99% of them 255
    gray = decoded(tmp_path, f"x.{fmt.lower()}", image, format=fmt)
    np.testing.assert_array_equal(gray, expected)


def test_16bit_big_endian_and_32bit_int_holding_16bit(tmp_path: Path) -> None:
    expected = np.round(RAMP16 / 257).astype(np.uint8)
    big = Image.fromarray(RAMP16.astype(">u2"))
    assert big.mode == "I;16B"
    np.testing.assert_array_equal(decoded(tmp_path / "b", "x.tiff", big), expected)
    wide = Image.fromarray(RAMP16.astype(np.int32))
    assert wide.mode == "I"
    np.testing.assert_array_equal(decoded(tmp_path / "i", "x.tiff", wide), expected)
    rgb = decoded(tmp_path / "rgb", "x.png", Image.fromarray(RAMP16), channels=3)
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=-1))


def test_16bit_pgm_scaled(tmp_path: Path) -> None:
    pgm = b"P5 3 1 65535\n" + np.array([0, 257 * 100 + 128, 65535], ">u2").tobytes()
    assert decoded(tmp_path, "x.pgm", pgm).tolist() == [[0, 100, 255]]


def test_32bit_int_outside_16bit_range_and_float_refused(tmp_path: Path) -> None:
    wide = Image.fromarray(np.array([[0, 70000], [5, 6]], np.int32))
    assert "B/x.tiff (mode I pixels span 0..70000, outside the 16-bit range 0..65535" in refused(
        tmp_path / "i", "x.tiff", wide
    )
    floats = Image.fromarray(np.array([[0.0, 0.5], [1.0, 2.0]], np.float32))
    assert "B/x.tiff (mode F (32-bit float pixels) has no defined 0..255 range" in refused(
        tmp_path / "f", "x.tiff", floats
    )


def test_alpha_composited_over_black(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    rgba[0, :, 3] = 0  # transparent row: background
    expected_rgb = over_black(rgba)
    np.testing.assert_array_equal(decoded(tmp_path / "c", "x.png", Image.fromarray(rgba), channels=3), expected_rgb)
    np.testing.assert_array_equal(decoded(tmp_path / "g", "x.png", Image.fromarray(rgba)), to_luma(expected_rgb))
    la = rgba[..., [0, 3]]
    gray = decoded(tmp_path / "la", "x.png", Image.fromarray(la, "LA"))
    np.testing.assert_array_equal(gray, over_black(la)[..., 0])
    assert gray[0].tolist() == [0] * 8


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    palette = Image.fromarray(synthetic_pixels(1, 8, rgb=True)[0]).convert("P")
    np.testing.assert_array_equal(decoded(tmp_path / "p", "x.png", palette), np.asarray(palette.convert("L")))
    clear = int(np.asarray(palette)[0, 0])  # this palette entry becomes transparent: background, black
    expected = np.asarray(palette.convert("L")).copy()
    expected[np.asarray(palette) == clear] = 0
    for fmt in ("PNG", "GIF"):  # Pillow reads a file by its content: a GIF named .png is a GIF
        data = decoded(tmp_path / fmt, "t.png", palette, format=fmt, transparency=clear)
        np.testing.assert_array_equal(data, expected)


def test_palette_with_alpha_tiff(tmp_path: Path) -> None:
    rgba = np.random.default_rng(1).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    pa = Image.fromarray(rgba[..., :3]).convert("P").convert("PA")
    pa.putalpha(Image.fromarray(rgba[..., 3]))
    expected = to_luma(over_black(np.asarray(pa.convert("RGBA"))))
    np.testing.assert_array_equal(decoded(tmp_path, "x.tiff", pa), expected)


def test_premultiplied_gray_alpha_tiff(tmp_path: Path) -> None:
    la = np.random.default_rng(2).integers(0, 256, (8, 8, 2), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(la, "LA").save(buffer, "TIFF")
    extra_samples = b"\x52\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # tag 338, SHORT, 1 value: 2 = unassociated
    data = buffer.getvalue().replace(extra_samples, extra_samples[:8] + b"\x01\x00")  # 1 = associated (La)
    assert Image.open(io.BytesIO(data)).mode == "La"
    np.testing.assert_array_equal(decoded(tmp_path, "x.tiff", data), la[..., 0])  # stored already over black


def test_other_modes_use_pillows_conversion_lab_through_rgb(tmp_path: Path) -> None:
    """1-bit, CMYK, YCbCr, RGB: Pillow's own conversion; LAB, which Pillow converts only to RGB: through RGB."""
    rgb = Image.fromarray(synthetic_pixels(1, 8, rgb=True)[0])
    cases = [("1", "PNG"), ("CMYK", "TIFF"), ("CMYK", "JPEG"), ("YCbCr", "TIFF"), ("RGB", "PNG"), ("LAB", "TIFF")]
    for k, ((mode, fmt), channels) in enumerate(itertools.product(cases, (1, 3))):
        image = rgb.convert(mode) if mode != "LAB" else Image.fromarray(np.asarray(rgb), "LAB")
        path = tmp_path / f"saved{k}"
        image.save(path, format=fmt)
        reopened = Image.open(path)
        assert reopened.mode == mode
        target = "L" if channels == 1 else "RGB"
        expected = reopened.convert("RGB").convert(target) if mode == "LAB" else reopened.convert(target)
        name = "x.jpeg" if fmt == "JPEG" else f"x.{fmt.lower()}"
        pixels = decoded(tmp_path / str(k), name, path.read_bytes(), channels)
        np.testing.assert_array_equal(pixels, np.asarray(expected), err_msg=f"{mode} {fmt} → {target}")


def test_modes_without_files_convert_in_memory() -> None:
    hsv = Image.new("HSV", (2, 2), (0, 255, 255))  # pure red
    assert to_mode(hsv, "RGB").getpixel((0, 0)) == (255, 0, 0) and to_mode(hsv, "L").getpixel((0, 0)) == 76
    assert to_mode(Image.new("RGBX", (2, 2), (10, 20, 30, 0)), "L").getpixel((0, 0)) == 18
    rgba = np.random.default_rng(3).integers(0, 256, (4, 4, 4), dtype=np.uint8)
    premultiplied = Image.fromarray(rgba).convert("RGBa")
    np.testing.assert_array_equal(np.asarray(to_mode(premultiplied, "RGB")), np.asarray(premultiplied)[..., :3])


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "x.png"), ("PNG", "x.png"), ("TIFF", "x.tiff"), ("WEBP", "x.webp")])
def test_multi_frame_files_refused_with_frame_count(tmp_path: Path, fmt: str, name: str) -> None:
    frames = [Image.new("L", (8, 8), value) for value in (0, 100, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    message = refused(tmp_path, name, buffer.getvalue())
    assert f"B/{name} (3 frames ({fmt} stack or animation); only single-frame images are read" in message


def test_exif_orientation_applied(tmp_path: Path) -> None:
    pixels = synthetic_pixels(1, 8)[0][:, :6]  # 6 wide, 8 high as stored
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90° clockwise to display": the upright image is 8 wide, 6 high
    root = tmp_path / "src"
    make_image_folder(root, {"A": 2}, size=8)
    for name in ("000000.jpeg", "000001.jpeg"):  # class A upright 8×6 too, so sizes agree after rotation
        Image.fromarray(synthetic_pixels(1, 8)[0][:6]).save(root / "A" / name)
    (root / "B").mkdir()
    Image.fromarray(pixels).save(root / "B" / "phone.jpeg", exif=exif.tobytes())
    data = read_folder(root)
    assert data.images.shape == (3, 6, 8)
    upright = ImageOps.exif_transpose(Image.open(root / "B" / "phone.jpeg")).convert("L")
    np.testing.assert_array_equal(data.images[-1], np.asarray(upright))


@pytest.mark.parametrize("limit", [40, 30], ids=["warning", "error"])
def test_decompression_bomb_is_one_bad_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    root = make_image_folder(tmp_path / "src", {"A": 2, "B": 2}, size=4)
    Image.new("L", (8, 8)).save(root / "B" / "big.png")
    # 8×8 = 64 pixels: over the limit of 40 (Pillow warns), or over twice the limit of 30 (Pillow raises)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape
        with pytest.raises(DataError, match=r"1 of 5 images .*: B/big\.png \(DecompressionBomb.*MAX_IMAGE_PIXELS\)"):
            read_folder(root, image_size=4)
        data = read_folder(root, image_size=4, skip_bad=True)
    assert [s["id"] for s in data.meta["skipped"]] == ["B/big.png"] and len(data) == 4


def test_bad_modes_skipped_with_reason(tmp_path: Path) -> None:
    root = folder_with(tmp_path, "f.tiff", Image.fromarray(np.zeros((8, 8), np.float32)))
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(root / "B" / "g.png")
    data = load_dataset(root, cache_dir=tmp_path / "cache", skip_bad=True)
    assert data.ids.tolist() == ["A/000000.jpeg", "A/000001.jpeg", "B/g.png"]
    assert data.images[-1].max() == round(40000 / 257)
    (skipped,) = data.meta["skipped"]
    assert skipped["id"] == "B/f.tiff" and skipped["error"].startswith("mode F (32-bit float pixels)")


# -------------------------------------------------------------------------------------------- symlinks
LINK = r"remove or fix the link, or point --data.source elsewhere"


@pytest.mark.parametrize("broken", ["dangling", "loop"])
@pytest.mark.parametrize("where", ["class-folder", "image", "source"])
def test_broken_symlinks_named_with_remedy(tmp_path: Path, broken: str, where: str) -> None:
    root = make_image_folder(tmp_path / "src", {"A": 2, "B": 2})
    link = {"class-folder": root / "C", "image": root / "A" / "z.jpeg", "source": tmp_path / "link"}[where]
    link.symlink_to(tmp_path / "missing" if broken == "dangling" else link.name)
    source = link if where == "source" else root
    what = r"a dangling symlink \(its target .*missing' does not exist\)" if broken == "dangling" else "a symlink loop"
    with pytest.raises(DataError, match=rf"'{link}' is {what}.*; {LINK}$"):
        load_dataset(source, cache_dir=tmp_path / "cache")


def test_symlink_broken_after_listing_is_a_bad_image(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "src", {"A": 2, "B": 2})
    link = root / "B" / "z.jpeg"
    link.symlink_to(root / "A" / "000000.jpeg")
    listing = list_folder(root)
    link.unlink()
    link.symlink_to(tmp_path / "gone.jpeg")
    result = decode_listing(listing, skip_bad=True)
    error = f"a dangling symlink (its target '{tmp_path / 'gone.jpeg'}' does not exist); {LINK}"
    assert result.skipped == [{"id": "B/z.jpeg", "error": error}]
