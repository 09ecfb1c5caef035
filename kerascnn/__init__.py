"""kerascnn: convolutional networks for images from one spec.

    INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC

The public API is imported lazily so that ``import kerascnn`` (and the
``kerascnn --help`` / ``kerascnn summary`` commands) never import TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "CNNSpec": "kerascnn.spec",
    "analyze": "kerascnn.analysis",
    "is_valid": "kerascnn.analysis",
    "max_conv_blocks": "kerascnn.analysis",
    "Analysis": "kerascnn.analysis",
    "build_cnn": "kerascnn.builders",
    "get_preset": "kerascnn.presets",
    "list_presets": "kerascnn.presets",
    "load_dataset": "kerascnn.data",
    "DatasetBundle": "kerascnn.data",
    "list_datasets": "kerascnn.data",
    "preprocessing_layers": "kerascnn.data",
    "network_input_shape": "kerascnn.data",
    "CNNHyperModel": "kerascnn.hypermodel",
    "tune": "kerascnn.tuning",
    "train": "kerascnn.training",
    "lr_find": "kerascnn.training",
    "compile_model": "kerascnn.training",
    "save_model": "kerascnn.runs",
    "build_finetune_model": "kerascnn.finetuning",
    "freeze_backbone": "kerascnn.finetuning",
    "unfreeze_backbone": "kerascnn.finetuning",
    "evaluate": "kerascnn.evaluation",
    "predict": "kerascnn.evaluation",
    "export": "kerascnn.exporting",
    "finetune": "kerascnn.finetuning",
    "load_model": "kerascnn.runs",
    "InputError": "kerascnn.checks",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kerascnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
