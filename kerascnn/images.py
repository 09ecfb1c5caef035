"""Image files: finding them, checking them, and decoding them as a model takes them.

The one place where kerascnn opens image files with Pillow (`predict`, the
pictures of `kerascnn.visualize`, the header checks the command line runs
before TensorFlow loads). Every decoding failure, whether a corrupt, truncated
or zero-byte file or one that is not an image at all, becomes an `InputError`
that names the file (`image_error`).

Light: Pillow and numpy only, no TensorFlow, so the command line can refuse a
bad file in a blink.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from kerascnn.checks import InputError, received

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")
# the Pillow mode of an image with this many channels
COLOR_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# what Pillow raises on a file it cannot decode (UnidentifiedImageError is an OSError)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def image_error(path: str | os.PathLike, error: BaseException) -> InputError:
    """The `InputError` for a file Pillow could not decode: the file and the reason.

    Args:
        path: the image file.
        error: the exception Pillow raised.

    Returns:
        An `InputError` (to raise `from None`).
    """
    lines = str(error).strip().splitlines()
    reason = lines[0][:200] if lines else type(error).__name__
    if isinstance(error, UnidentifiedImageError):
        reason = "not an image Pillow can identify"
    return InputError(f"Could not read image {str(path)!r}: {reason}. Allowed: image files "
                      f"Pillow decodes ({', '.join(IMAGE_EXTENSIONS)}). "
                      f"{received('image', str(path))}")


def _check_channels(channels: int) -> str:
    mode = COLOR_MODES.get(channels) if isinstance(channels, int) else None
    if mode is None:
        raise InputError(f"Images can be given to models with 1, 3 or 4 channels. "
                         f"{received('channels', channels)}")
    return mode


def check_image(path: str | os.PathLike, *, verify: bool = False) -> tuple[tuple[int, int], str]:
    """Open an image's header (no pixels decoded) and return its size and mode.

    Args:
        path: the image file.
        verify: bool. Also run Pillow's `verify()` (checks the file's
            structure, e.g. PNG chunk checksums; still no full decode).
            Defaults to `False`.

    Returns:
        `((height, width), mode)`, mode a Pillow mode such as `"L"` or `"RGB"`.

    Raises:
        InputError: the file does not exist or is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Image file not found. {received('image', str(path))}")
    try:
        with Image.open(path) as img:
            size, mode = (img.height, img.width), img.mode
            if verify:
                img.verify()
    except DECODE_ERRORS as e:
        raise image_error(path, e) from None
    return size, mode


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """`img` in `mode`, as `tf.io.decode_image` converts for the same channels."""
    if img.mode == mode:
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert clips 16-bit values at 255; scale them as TensorFlow does
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray((arr * 255.0 / top).round().astype(np.uint8), "L")
    return img if img.mode == mode else img.convert(mode)


def load_image(path: str | os.PathLike, size: Sequence[int | None] = (None, None),
               channels: int = 3, *, dtype: str = "uint8") -> np.ndarray:
    """Decode one image as `(height, width, channels)`, resized to `size`.

    Colour is converted the way `tf.io.decode_image` does for the same number
    of channels (grayscale uses ITU-R 601-2 luma, 16-bit grayscale is scaled to
    0..255); resizing is bilinear. Pixel values stay 0..255, as kerascnn
    models take them (they rescale inside the model).

    Args:
        path: str or PathLike. An image file Pillow can read (PNG, JPEG, BMP,
            GIF, WebP, TIFF, PPM/PGM).
        size: `(height, width)`. A `None` keeps the image's own height or
            width. Defaults to `(None, None)`.
        channels: int. 1 (grayscale), 3 (RGB) or 4 (RGBA). Defaults to 3.
        dtype: str. The array's dtype, e.g. `"float32"` to feed a model
            directly. Defaults to `"uint8"`.

    Returns:
        An array `(height, width, channels)`.

    Raises:
        InputError: the file does not exist or cannot be decoded (the file is
            named), or `channels` is not 1, 3 or 4.
    """
    mode = _check_channels(channels)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Image file not found. {received('image', str(path))}")
    height, width = size
    try:
        with Image.open(path) as img:
            img.load()
            img = _convert(img, mode)
            target = (int(width or img.width), int(height or img.height))
            if (img.width, img.height) != target:
                img = img.resize(target, Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except DECODE_ERRORS as e:
        raise image_error(path, e) from None
    array = array.reshape(array.shape[0], array.shape[1], channels)
    return array if dtype == "uint8" else array.astype(dtype)


def as_image(image, input_shape: Sequence[int | None]) -> np.ndarray:
    """One float32 image `(height, width, channels)` for a model, from a path or an array.

    Args:
        image: str or PathLike (decoded with `load_image`, resized and
            converted to `input_shape`), or an array `(height, width,
            channels)`, `(1, height, width, channels)` or, for one channel,
            `(height, width)`, of raw pixels.
        input_shape: `(height, width, channels)` of the model's input; `None`
            height or width accepts any.

    Returns:
        A float32 array `(height, width, channels)`.

    Raises:
        InputError: an unreadable file, or an array of another shape.
    """
    height, width, channels = input_shape
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, (height, width), channels, dtype="float32")
    array = np.asarray(image, dtype="float32")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    expected = (height, width, channels)
    if array.ndim != 3 or any(e is not None and e != a for e, a in zip(expected, array.shape)):
        raise InputError(f"The image array must have the model's input shape {expected}. "
                         f"Received: image.shape={np.shape(image)}")
    return array


def find_images(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Image files named by `paths`: files as given, folders searched recursively.

    Inside folders only files with an image extension are taken
    (`IMAGE_EXTENSIONS`), in sorted order, skipping hidden files and folders; a
    file named directly is always taken.

    Raises:
        InputError: a path that does not exist, a folder without images, or no
            path at all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise InputError("Name at least one image file or folder. Received: no paths")
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            images = sorted(f for f in p.rglob("*")
                            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not images:
                raise InputError(f"Folder {str(p)!r} holds no images; allowed extensions: "
                                 f"{', '.join(IMAGE_EXTENSIONS)}. {received('path', str(p))}")
            found.extend(images)
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"Image file or folder not found. {received('path', str(p))}")
    return found
