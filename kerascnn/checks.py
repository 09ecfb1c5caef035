"""Checks of user input shared by every module, and the error they raise.

Pure Python: importing this module imports nothing heavy. Every refusal of
user input in kerascnn raises `InputError` (a `ValueError`), with a message in
the Keras style: what was wrong, what is allowed, and last what was received::

    raise InputError(f"epochs must be an integer >= 1. {received('epochs', 0)}")

The command line turns `InputError` (and click's usage errors) into one line
and exit code 2; any other exception is a bug and is reported as one.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Optional

# TensorFlow's image resizing counts in int32; a 32768 x 32768 RGB image is already
# 12 GiB as float32
MAX_IMAGE_SIDE = 2**15
MAX_SEED = 2**32 - 1  # numpy.random.seed's limit (keras.utils.set_random_seed)
# Keras counts steps inside one execution with an int32 tensor
MAX_STEPS_PER_EXECUTION = 2**31 - 1
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class InputError(ValueError):
    """Input that kerascnn refuses: a wrong argument, file, option or data set.

    A subclass of `ValueError`, so code that catches `ValueError` keeps working.
    The message says what was wrong, what is allowed, and ends with
    `Received: ...`.
    """


def received(name: str, value: Any) -> str:
    """The closing words of an error message: `Received: name=value`."""
    return f"Received: {name}={value!r}"


def is_int(value: Any) -> bool:
    """True for a Python or numpy integer, False for `bool`."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") \
        and value.dtype.kind in "iu"


def check_int(name: str, value: Any, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """`value` as an int, refusing bools, non-integers and values outside
    `minimum`..`maximum`."""
    if not is_int(value) or int(value) < minimum \
            or (maximum is not None and int(value) > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise InputError(f"{name} must be an integer {bound}. {received(name, value)}")
    return int(value)


def check_seed(seed: Any) -> int:
    """A random seed: NumPy, Python and TensorFlow all take 0..2**32-1."""
    return check_int("seed", seed, minimum=0, maximum=MAX_SEED)


def check_float(name: str, value: Any, *, minimum: float = 0.0, inclusive: bool = False,
                maximum: Optional[float] = None) -> float:
    """`value` as a finite float above `minimum` (or equal when `inclusive`)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) \
            or (number < minimum if inclusive else number <= minimum) \
            or (maximum is not None and number > maximum):
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        if maximum is not None:
            bound += f" and <= {maximum}"
        raise InputError(f"{name} must be a number {bound}. {received(name, value)}")
    return number


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """`value` if it is one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise InputError(f"Unknown {name} {value!r}; allowed: "
                         f"{', '.join(str(a) for a in allowed)}. {received(name, value)}")
    return value


def check_image_size(value: Any, name: str = "image_size") -> Optional[tuple[int, int]]:
    """`(height, width)` from an int (a square), a 1- or 2-sequence of ints, or None.

    The one reading of `image_size` (`load_dataset`, `train`, `tune`,
    `finetune`, the `--image-size` option): `32` and `(32,)` mean 32x32.

    Args:
        value: None, an int from 1 to `MAX_IMAGE_SIDE`, or a sequence of one or
            two such ints.
        name: str. The argument's name in the error message.
            Defaults to `"image_size"`.

    Returns:
        `(height, width)` as Python ints, or None when `value` is None.

    Raises:
        InputError: anything else (bools, floats, strings, zero, three sizes).
    """
    if value is None:
        return None
    if is_int(value):
        size: tuple = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) in (1, 2):
        size = tuple(value) * (3 - len(value))
    else:
        size = ()
    if len(size) != 2 or not all(is_int(v) and 1 <= int(v) <= MAX_IMAGE_SIDE for v in size):
        raise InputError(f"{name} must be (height, width) of integers from 1 to "
                         f"{MAX_IMAGE_SIDE}, or one integer for a square. "
                         f"{received(name, value)}")
    return int(size[0]), int(size[1])


def parse_duration(value: Any, name: str = "time_budget") -> Optional[float]:
    """Seconds from `90`, `"90s"`, `"15m"`, `"1h30m"`; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"{name} must be seconds or a duration such as '15m'. "
                         f"{received(name, value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif re.fullmatch(r"(\d+(\.\d+)?[smhd])+", text):
            seconds = sum(float(n) * _DURATION_UNITS[u]
                          for n, _, u in re.findall(r"(\d+(\.\d+)?)([smhd])", text))
        else:
            raise InputError(f"{name} must be a duration such as 90s, 15m or 1h30m. "
                             f"{received(name, value)}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"{name} must be positive. {received(name, value)}")
    return seconds


def format_duration(seconds: float) -> str:
    """`95` -> `"1:35"`, `3725` -> `"1:02:05"` (progress lines, ETAs)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# ---------------------------------------------------------------------------
# Allowed values of choice arguments. They live here, in a pure module, so the
# command line offers them (click.Choice) without importing the heavy module
# that uses them; that module imports them from here.
# ---------------------------------------------------------------------------

SCHEDULES = ("constant", "cosine", "one-cycle", "plateau")
STRATEGIES = ("none", "mirrored", "multiworker")
LR_FIND_METHODS = ("steepest", "minimum/10")
TUNERS = ("halving", "hyperband", "bayesian", "random", "grid")
DISTRIBUTED_ROLES = ("chief", "worker")
COLOR_MODES = ("grayscale", "rgb", "rgba")
SPLITS = ("train", "validation", "test")
EXPORT_FORMATS = ("keras", "saved_model", "tflite", "onnx")
VISUALIZE_KINDS = ("filters", "feature-maps", "gradcam", "saliency", "learning-curves")
CAM_METHODS = ("hirescam", "gradcam")
BACKBONES = ("vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0")
