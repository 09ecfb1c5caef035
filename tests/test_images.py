"""kerascnn.images: one decoder, one error for files that are not images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kerascnn.checks import InputError
from kerascnn.images import check_image, find_images, load_image


def _png(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return path


def test_load_image_sizes_channels_and_dtype(tmp_path):
    rgb = _png(tmp_path / "rgb.png", np.random.default_rng(0).integers(0, 256, (20, 24, 3),
                                                                       dtype=np.uint8))
    assert load_image(rgb, (12, 10), 1).shape == (12, 10, 1)
    assert load_image(rgb).shape == (20, 24, 3)
    assert load_image(rgb, (None, 8), 4).shape == (20, 8, 4)
    as_float = load_image(rgb, (8, 8), 3, dtype="float32")
    assert as_float.dtype == np.float32 and as_float.max() > 1.0  # raw 0..255 pixels
    np.testing.assert_array_equal(as_float, load_image(rgb, (8, 8), 3).astype("float32"))
    # gray as tf.io.decode_image(channels=1): ITU-R 601-2 luma
    pixel = np.array([[[200, 100, 50]]], np.uint8)
    one = load_image(_png(tmp_path / "one.png", pixel), (1, 1), 1)
    assert int(one[0, 0, 0]) == round(200 * 0.299 + 100 * 0.587 + 50 * 0.114)


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)).save(path)
    np.testing.assert_array_equal(load_image(path, (None, None), 1)[0, :, 0], [0, 128, 255])
    rgb = load_image(path, (None, None), 3)  # gray to RGB repeats the scaled channel
    np.testing.assert_array_equal(rgb[0], [[0, 0, 0], [128, 128, 128], [255, 255, 255]])


def _truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(buf, "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buf.getvalue()[:60])
    return path


def _write(name, data):
    def make(folder):
        (folder / name).write_bytes(data)
        return folder / name
    return make


@pytest.mark.parametrize("make", [
    _write("zero.png", b""),
    _write("text.jpg", b"not an image"),
    _write("noise.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
    _truncated_png,
], ids=["zero-byte", "text", "corrupt", "truncated"])
def test_every_decoding_failure_is_an_input_error_naming_the_file(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(InputError, match=rf"Could not read image .*{path.name}.*Received: image="):
        load_image(path, (8, 8), 3)


def test_check_image_reads_the_header(tmp_path):
    path = _png(tmp_path / "a.png", np.zeros((5, 7), np.uint8))
    assert check_image(path) == ((5, 7), "L")
    assert check_image(path, verify=True) == ((5, 7), "L")
    (tmp_path / "b.png").write_text("nope")
    with pytest.raises(InputError, match="Could not read image .*b.png"):
        check_image(tmp_path / "b.png")
    with pytest.raises(InputError, match="Image file not found.*missing.png"):
        check_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="Image file not found.*missing.png"):
        load_image(tmp_path / "missing.png")


def test_load_image_refuses_other_channel_counts(tmp_path):
    path = _png(tmp_path / "a.png", np.zeros((5, 7), np.uint8))
    with pytest.raises(InputError, match="1, 3 or 4 channels. Received: channels=2"):
        load_image(path, (5, 7), 2)


def test_find_images(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for name in ("a/2.png", "a/1.JPG", "a/notes.txt", "a/.hidden/3.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_images(tmp_path / "a")] == ["1.JPG", "2.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images.*Received: path='.*empty'"):
        find_images([tmp_path / "empty"])
    with pytest.raises(InputError, match="not found.*missing.png"):
        find_images([tmp_path / "missing.png"])
    with pytest.raises(InputError, match="at least one"):
        find_images([])


def _encoded(fmt: str, mode: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


_FORMATS = [("PNG", "RGB"), ("PNG", "L"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"),
            ("TIFF", "RGB"), ("WEBP", "RGB"), ("PPM", "RGB")]
_ENCODED = {f"{fmt}-{mode}": _encoded(fmt, mode) for fmt, mode in _FORMATS}


@st.composite
def _damaged(draw):
    """An encoded image cut short, overwritten in places, padded, or zeroed."""
    name = draw(st.sampled_from(sorted(_ENCODED)))
    data = bytearray(_ENCODED[name])
    how = draw(st.sampled_from(["truncate", "overwrite", "insert", "zero"]))
    if how == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == "overwrite":
        for at, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1),
                                                 st.integers(0, 255)), min_size=1, max_size=16)):
            data[at] = value
    elif how == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=48))
    else:
        data = bytearray(len(data))
    return name, how, bytes(data)


@pytest.mark.filterwarnings("ignore:.*:UserWarning:PIL")  # Pillow's notes on damaged TIFFs
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=_damaged(), channels=st.sampled_from([1, 3, 4]))
def test_damaged_files_decode_or_raise_input_error(tmp_path, case, channels):
    """Issue 14's rule for every damaged file: it decodes, or it is an InputError naming it."""
    name, how, data = case
    path = tmp_path / f"damaged-{name}.img"
    path.write_bytes(data)
    readers = (lambda: load_image(path, (8, 8), channels),
               lambda: check_image(path, verify=True))
    for read in readers:
        try:
            out = read()
        except InputError as e:
            assert "damaged-" in str(e) and "Received: image=" in str(e)
        else:
            if isinstance(out, np.ndarray):
                assert out.shape == (8, 8, channels) and out.dtype == np.uint8
