"""Fuzzing `load_dataset` (issue 14): malformed `.npz` files, class folders and arguments.

Every case either loads, and then every split can be read to the end, or is
refused with `InputError`; nothing else may escape, and a refused case writes
nothing. The default run tries a bounded number of cases (a few seconds);
`--runslow` tries many more. The numbers of cases tried, loaded and refused
are written to the terminal at the end of the module.
"""

from __future__ import annotations

import collections
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerascnn.checks import InputError
from kerascnn.data import load_dataset, network_input_shape, preprocessing_layers

FAST = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# the slow cases are drawn the same way on every run (CI judges the code, not the draw);
# KERASCNN_FUZZ_RANDOM=1 draws new ones
RANDOM = bool(os.environ.get("KERASCNN_FUZZ_RANDOM"))
COUNTS: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and COUNTS:
        line = ", ".join(f"{k}={v}" for k, v in sorted(COUNTS.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nload_dataset fuzz cases: {line}")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def _load_and_read(kind: str, folder: Path, source: Path, **options) -> None:
    """load_dataset(source), then read every split; only InputError may stop it."""
    before = _snapshot(folder)
    COUNTS[f"{kind}_tried"] += 1
    try:
        bundle = load_dataset(source, **options)
    except InputError as e:
        assert str(e).strip() and "Received" in str(e), str(e)
        COUNTS[f"{kind}_refused"] += 1
        assert _snapshot(folder) == before, "a refused dataset wrote files"
        return
    COUNTS[f"{kind}_loaded"] += 1
    assert bundle.num_classes >= 2 and bundle.num_train >= 1 and bundle.num_test >= 1
    for split, count in (("train", bundle.num_train), ("validation", bundle.num_validation),
                         ("test", bundle.num_test)):
        x, y = bundle.arrays(split)
        assert len(x) == len(y) == count
        if count:
            assert x.shape[1:] == bundle.input_shape and x.dtype == np.dtype(bundle.dtype)
            assert y.min() >= 0 and y.max() < bundle.num_classes
            if bundle.dtype == "float32":
                assert np.all(np.isfinite(x))
    batch_x, batch_y = next(iter(bundle.train))
    assert tuple(batch_x.shape[1:]) == bundle.input_shape
    assert len(network_input_shape(bundle)) == len(bundle.input_shape)
    preprocessing_layers(bundle)
    assert _snapshot(folder) == before, "loading wrote files"


# ---------------------------------------------------------------------------- .npz files

NPZ_FAULTS = [
    "dtype_bool", "dtype_complex", "dtype_str", "dtype_object", "dtype_int64", "dtype_float16",
    "dtype_uint16_large", "rank1", "rank2_uint8", "rank6", "huge_dim", "huge_empty_dim",
    "nan", "inf", "negative_pixels", "labels_negative", "labels_fractional",
    "labels_out_of_range", "labels_nan", "labels_strings", "labels_column", "labels_matrix",
    "labels_bool", "labels_scalar", "one_class", "length_mismatch", "empty_train",
    "empty_test", "tiny_train", "test_shape_differs", "test_dtype_differs", "missing_keys",
    "extra_keys", "names_short", "names_numbers", "names_matrix", "truncated", "garbage",
    "empty_file", "not_npy",
]


@st.composite
def npz_case(draw):
    """(arrays, corruption): a sound dataset with zero to two faults from `NPZ_FAULTS`."""
    # about half the cases have no fault, a few have two
    faults = {draw(st.sampled_from(["none"] * len(NPZ_FAULTS) + NPZ_FAULTS)),
              draw(st.sampled_from(["none"] * 3 * len(NPZ_FAULTS) + NPZ_FAULTS))} - {"none"}
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    layout = "keras" if draw(st.booleans()) else "xy"
    classes = draw(st.integers(2, 4))
    kind = draw(st.sampled_from(["image_uint8", "image_uint8", "gray_uint8", "image_float",
                                 "signal", "volume"]))
    shape = {"image_uint8": (6, 5, draw(st.sampled_from([1, 3]))), "gray_uint8": (6, 5),
             "image_float": (4, 4, 3), "signal": (9, 2), "volume": (2, 3, 3, 1)}[kind]
    n_train, n_test = 24, 8

    def examples(n: int, shape=shape) -> np.ndarray:
        if "rank1" in faults:
            shape = ()
        elif "rank2_uint8" in faults:
            shape = (7,)
        elif "rank6" in faults:
            shape = (1, 2, 1, 2, 1)
        elif "huge_dim" in faults:
            shape = (40_000, 1)
        elif "huge_empty_dim" in faults:
            n, shape = 0, (1 << 40, 1)
        x = rng.integers(0, 256, (n, *shape))
        if "negative_pixels" in faults:
            x = x - 128
        if "dtype_uint16_large" in faults:
            return (x * 250).astype(np.uint16)
        dtype = "uint8" if kind.endswith("uint8") or kind == "volume" else "float32"
        for fault, name in (("dtype_bool", "bool"), ("dtype_complex", "complex64"),
                            ("dtype_int64", "int64"), ("dtype_float16", "float16")):
            if fault in faults:
                dtype = name
        if "dtype_str" in faults:
            return np.full(x.shape, "ab", dtype="U3")
        if "dtype_object" in faults:
            return np.full(x.shape, None, dtype=object)
        x = x.astype(dtype)
        if dtype.startswith("float"):
            x = x / 255
            if "nan" in faults:
                x.flat[:: 7] = np.nan
            if "inf" in faults:
                x.flat[:: 11] = -np.inf
        return x

    def targets(n: int) -> np.ndarray:
        y = rng.permutation(np.arange(n) % classes)
        if "one_class" in faults:
            y = np.zeros(n, np.int64)
        if "labels_negative" in faults:
            y = y - 1
        if "labels_out_of_range" in faults:
            y = y * 1000
        if "length_mismatch" in faults:
            y = y[:-1]
        if "labels_fractional" in faults:
            return y + 0.5
        if "labels_nan" in faults:
            return np.where(np.arange(len(y)) % 3 == 0, np.nan, y)
        if "labels_strings" in faults:
            return y.astype(str)
        if "labels_column" in faults:
            return y[:, None].astype(np.uint8)
        if "labels_matrix" in faults:
            return np.stack([y, y], axis=1)
        if "labels_bool" in faults:
            return (y % 2).astype(bool)
        if "labels_scalar" in faults:
            return np.array(1)
        return y.astype(draw(st.sampled_from(["int64", "uint8", "int32", "float32"])))

    if "empty_train" in faults:
        n_train = 0
    if "tiny_train" in faults:
        n_train = draw(st.integers(1, 3))
    if "empty_test" in faults:
        n_test = 0
    x, y = examples(n_train), targets(n_train)
    contents: dict[str, np.ndarray] = {}
    if layout == "keras":
        test_shape = tuple(d + 1 for d in shape) if "test_shape_differs" in faults else shape
        x_test = examples(n_test, test_shape)
        if "test_dtype_differs" in faults and x_test.dtype.kind in "biuf":
            x_test = x_test.astype(np.float64)  # (strings, objects, complex: differ already)
        contents.update(x_train=x, y_train=y, x_test=x_test, y_test=targets(n_test))
    else:
        contents.update(x=x, y=y)
    if "missing_keys" in faults:
        contents = {("images" if k.startswith("x") else "targets") + k[1:]: v
                    for k, v in contents.items()}
    if "extra_keys" in faults:
        contents["notes"] = np.arange(3)
    if draw(st.booleans()):
        contents["class_names"] = np.array([f"c{i}" for i in range(classes)])
    if "names_short" in faults:
        contents["class_names"] = np.array(["only"])
    if "names_numbers" in faults:
        contents["class_names"] = np.arange(classes)
    if "names_matrix" in faults:
        contents["class_names"] = np.array([["a", "b"], ["c", "d"]])
    corruption = next((f for f in ("truncated", "garbage", "empty_file", "not_npy")
                       if f in faults), "none")
    COUNTS.update(f"fault:{f}" for f in faults)
    return contents, corruption


def _write_npz(path: Path, contents: dict, corruption: str) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **contents)
    data = buffer.getvalue()
    if corruption == "truncated":
        data = data[: len(data) // 2]
    elif corruption == "garbage":
        data = bytes(np.random.default_rng(len(data)).integers(0, 256, 200, dtype=np.uint8))
    elif corruption == "empty_file":
        data = b""
    elif corruption == "not_npy":
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as z:
            z.writestr("x.npy", b"\x93NUMPY not really")
            z.writestr("y.npy", b"")
        data = inner.getvalue()
    path.write_bytes(data)


NPZ_OPTIONS = st.fixed_dictionaries({
    "validation_split": st.sampled_from([0.0, 0.1, 0.5, 0.9]),
    "batch_size": st.sampled_from([1, 4, 128]),
    "color_mode": st.sampled_from([None] * 4 + ["grayscale", "rgb", "rgba"]),
    "image_size": st.sampled_from([None] * 4 + [4, (3, 5)]),
})


def _fuzz_npz(case, options):
    contents, corruption = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "data.npz"
        _write_npz(path, contents, corruption)
        _load_and_read("npz", folder, path, **options)


@settings(max_examples=30, **FAST)
@given(case=npz_case(), options=NPZ_OPTIONS)
def test_fuzz_npz(case, options):
    _fuzz_npz(case, options)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, database=None, derandomize=not RANDOM,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=npz_case(), options=NPZ_OPTIONS)
def test_fuzz_npz_many(case, options):
    _fuzz_npz(case, options)


# ---------------------------------------------------------------------------- class folders

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF"}
# the Pillow modes each format can write
WRITABLE = {"PNG": ("L", "RGB", "RGBA", "P", "1", "I;16", "LA"), "JPEG": ("L", "RGB", "CMYK"),
            "BMP": ("L", "RGB", "P", "1"), "GIF": ("L", "P")}
FOLDER_FAULTS = [
    "truncated", "zero_byte", "garbage", "text_as_image", "flipped_byte", "mixed_modes",
    "mixed_sizes", "mixed_formats", "one_class", "empty_class", "ignored_files", "split",
    "split_test_lacks_class", "split_test_extra_class", "loose_images", "nested", "hidden",
    "animated_gif", "tiny_images", "sixteen_bit",
]


def _image_bytes(mode: str, fmt: str, size: tuple[int, int], rng, frames: int = 1) -> bytes:
    from PIL import Image

    h, w = size
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w)).astype(np.uint16))
    elif mode in ("1", "P", "CMYK", "LA"):
        rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        img = rgb.convert(mode)
    else:
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        img = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    buffer = io.BytesIO()
    if frames > 1:
        more = [img.rotate(90 * i) for i in range(1, frames)]
        img.save(buffer, format=fmt, save_all=True, append_images=more)
    else:
        img.save(buffer, format=fmt)
    return buffer.getvalue()


@st.composite
def folder_case(draw):
    """{relative path: bytes}: a sound class folder with zero to two faults."""
    # about half the cases have no fault, a few have two
    faults = {draw(st.sampled_from(["none"] * len(FOLDER_FAULTS) + FOLDER_FAULTS)),
              draw(st.sampled_from(["none"] * 3 * len(FOLDER_FAULTS) + FOLDER_FAULTS))} - {"none"}
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    mode = draw(st.sampled_from(["L", "RGB"]))
    n_classes = 1 if "one_class" in faults else draw(st.integers(2, 3))
    size = (1, 2) if "tiny_images" in faults else (8, 6)
    files: dict[str, bytes] = {}
    split = bool(faults & {"split", "split_test_lacks_class", "split_test_extra_class"})
    for c in range(n_classes):
        for part in (["train", "test"] if split else [""]):
            if part == "test" and c == 0 and "split_test_lacks_class" in faults:
                continue
            count = 0 if "empty_class" in faults and c == n_classes - 1 else 4
            for i in range(count):
                ext, fmt, m, shape = ".png", "PNG", mode, size
                if "mixed_formats" in faults:
                    ext = draw(st.sampled_from(list(FORMATS)))
                    fmt = FORMATS[ext]
                if "mixed_modes" in faults:
                    m = draw(st.sampled_from(WRITABLE[fmt]))
                if "sixteen_bit" in faults and fmt == "PNG":
                    m = "I;16"
                if m not in WRITABLE[fmt]:
                    m = "L"
                if "mixed_sizes" in faults and i % 2:
                    shape = (5, 9)
                frames = 3 if "animated_gif" in faults and i == 0 else 1
                if frames > 1:
                    ext, fmt = ".gif", "GIF"
                    m = "P"
                folder = "/".join(p for p in (part, f"class{c}") if p)
                if "nested" in faults and i == 1:
                    folder += "/deeper"
                files[f"{folder}/{i:02d}{ext}"] = _image_bytes(m, fmt, shape, rng, frames)
    if "split_test_extra_class" in faults:
        files["test/extra/00.png"] = _image_bytes("L", "PNG", size, rng)
    if "empty_class" in faults:
        files[f"{'train/' if split else ''}class{n_classes - 1}/readme.md"] = b"nothing here"
    if "ignored_files" in faults:
        files[f"{'train/' if split else ''}class0/notes.txt"] = b"not an image"
    if "loose_images" in faults:
        files = {name.rsplit("/", 1)[-1] if i < 3 else name: data
                 for i, (name, data) in enumerate(files.items())}
    if "hidden" in faults:
        files[".hidden/00.png"] = _image_bytes("L", "PNG", size, rng)
    images = [name for name in files if name.endswith(tuple(FORMATS))]
    victim = images[draw(st.integers(0, max(0, len(images) - 1)))] if images else None
    if victim is not None:
        data = files[victim]
        if "truncated" in faults:
            files[victim] = data[: draw(st.integers(1, max(1, len(data) - 1)))]
        if "zero_byte" in faults:
            files[victim] = b""
        if "garbage" in faults:
            files[victim] = bytes(rng.integers(0, 256, 64, dtype=np.uint8))
        if "text_as_image" in faults:
            files[victim] = b"this is not an image\n"
        if "flipped_byte" in faults and data:
            at = draw(st.integers(0, len(data) - 1))
            files[victim] = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    COUNTS.update(f"fault:{f}" for f in faults)
    return files


FOLDER_OPTIONS = st.fixed_dictionaries({
    "validation_split": st.sampled_from([0.0, 0.25, 0.5]),
    "batch_size": st.sampled_from([2, 32]),
    "color_mode": st.sampled_from([None] * 4 + ["grayscale", "rgb", "rgba"]),
    "image_size": st.sampled_from([None] * 3 + [6, (4, 7)]),
})


def _fuzz_folder(files, options):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        root = folder / "images"
        root.mkdir()
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        _load_and_read("folder", folder, root, **options)


@settings(max_examples=20, **FAST)
@given(files=folder_case(), options=FOLDER_OPTIONS)
def test_fuzz_class_folders(files, options):
    _fuzz_folder(files, options)


@pytest.mark.slow
@settings(max_examples=800, deadline=None, database=None, derandomize=not RANDOM,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(files=folder_case(), options=FOLDER_OPTIONS)
def test_fuzz_class_folders_many(files, options):
    _fuzz_folder(files, options)


def test_fuzz_found_cases_stay_fixed(tmp_path, make_image_folder):
    """Cases the fuzzing found, kept as plain tests."""
    from kerascnn.images import check_image

    # a PNG with one byte changed that Pillow's header check (with verify) accepts
    # but TensorFlow cannot decode: it used to stop training at the first epoch
    root = make_image_folder(tmp_path / "f", classes=("a", "b"), per_class=3, size=(8, 6),
                             mode="L")
    victim = root / "a" / "000.png"
    data = victim.read_bytes()
    accepted = []
    for at in range(len(data)):
        if len(accepted) == 2:
            break
        victim.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
        try:
            check_image(victim, verify=True)
        except InputError:
            continue
        accepted.append(at)
        with pytest.raises(InputError, match=r"Could not decode image '.*000\.png' as "
                                             r"grayscale with TensorFlow"):
            load_dataset(root)
    assert accepted, "no damaged file passed Pillow's check: the case needs a new byte"
    victim.write_bytes(data)
    assert load_dataset(root).num_classes == 2
    # x of rank 6
    np.savez(tmp_path / "r6.npz", x=np.zeros((4, 1, 1, 1, 1, 1), np.uint8), y=np.arange(4) % 2)
    with pytest.raises(InputError, match=r"Received: x.shape=\(4, 1, 1, 1, 1, 1\)"):
        load_dataset(tmp_path / "r6.npz")
    # an idx file whose header promises more sizes than it holds
    from kerascnn.data.idx import read_idx

    (tmp_path / "short-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00")
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_idx(tmp_path / "short-idx3-ubyte")
    # GIF files read as grayscale or RGBA (TensorFlow decodes GIF to RGB only): the
    # pipeline raised "channels must be 0 or 3 for GIF" at the first batch
    gifs = tmp_path / "g"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (gifs / c).mkdir(parents=True)
        # animated (the first frame is read), then mixed sizes: decoded in the pipeline
        (gifs / c / "00.gif").write_bytes(_image_bytes("P", "GIF", (8, 6), rng, frames=3))
        for i, size in enumerate(((5, 9), (8, 6), (5, 9))):
            (gifs / c / f"{i + 1:02d}.png").write_bytes(_image_bytes("L", "PNG", size, rng))
    for color_mode, channels in (("grayscale", 1), ("rgba", 4)):
        bundle = load_dataset(gifs, color_mode=color_mode, image_size=6, validation_split=0.0)
        x, _ = bundle.arrays("train")
        assert x.shape[1:] == tuple(bundle.input_shape) and x.shape[-1] == channels
        batch, _ = next(iter(bundle.train))
        assert tuple(batch.shape[1:]) == tuple(bundle.input_shape)
    assert sorted(os.listdir(tmp_path)) == ["f", "g", "r6.npz", "short-idx3-ubyte"]


# ---------------------------------------------------------------------------- arguments

ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True),
                      st.text(max_size=6), st.lists(st.integers(-1, 40), max_size=3),
                      st.tuples(st.integers(-1, 40), st.integers(-1, 40)))


ARGUMENTS = st.fixed_dictionaries({}, optional={
    "validation_split": ANY_VALUE, "image_size": ANY_VALUE, "color_mode": ANY_VALUE,
    "batch_size": ANY_VALUE, "seed": ANY_VALUE, "data_dir": ANY_VALUE})


@settings(max_examples=40, **FAST)
@given(args=ARGUMENTS)
def test_fuzz_load_dataset_arguments(args, gray_npz):
    """Any value of any argument: the dataset loads or the argument is an InputError."""
    _fuzz_arguments(args, gray_npz)


@pytest.mark.slow
@settings(max_examples=600, deadline=None, database=None, derandomize=not RANDOM)
@given(args=ARGUMENTS)
def test_fuzz_load_dataset_arguments_many(args, gray_npz):
    _fuzz_arguments(args, gray_npz)


def _fuzz_arguments(args, gray_npz):
    COUNTS["arguments_tried"] += 1
    try:
        bundle = load_dataset(gray_npz, **args)
    except InputError as e:
        COUNTS["arguments_refused"] += 1
        assert "Received" in str(e)
        return
    COUNTS["arguments_loaded"] += 1
    assert network_input_shape(bundle)[-1] in (1, 3)
