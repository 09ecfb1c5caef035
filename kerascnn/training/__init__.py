"""Training: `train`, `lr_find`, and the pieces they share with `finetune` and `tune`.

Modules, by role:

- `optimizers`: `make_optimizer`, `compile_model` (the compile settings of
  every kerascnn model).
- `distribute`: precision, op determinism, `TF_CONFIG`, `tf.distribute`
  strategies, and the Keras multi-worker patch.
- `callbacks`: `History`, `BestCheckpoint`, `EpochLogger`, `NaNGuard`,
  `Deadline`: the one set of callbacks used by train, finetune and tune.
- `fitting`: `fit_model`, compile and fit a built model with those
  callbacks, without writing a run folder.
- `resolve`: dataset + spec resolution (`resolve_spec`, `data_and_spec`),
  `build_model`.
- `trainer`: `train()` and its run folder (through `kerascnn.runs`), resume.
- `range_test`: `lr_find`, the learning-rate range test.

Speed options, measured by `python bench/overhead.py --repeats 4 --epochs 3`
(the `simple` preset on the bundled Fashion-MNIST sample, 5,400 training
images, batch 128; 2-core AMD EPYC with AVX-512 BF16, shared with other jobs,
load average 2-3; medians of interleaved repetitions in one run):

    kerascnn.train / hand-written Keras, same settings   1.015 (per CPU second 1.03)
    kerascnn defaults (batch 128) / Keras defaults (32)  x1.73
    mixed_precision=True (mixed_bfloat16 on this CPU)    x1.43 (per CPU second x1.21)
    jit=True (XLA)                                       x0.74: slower on this CPU,
                                                         hence off by default
    strategy="mirrored"                                  one CPU device here: no gain;
                                                         it spreads batches over GPUs

On a GPU `mixed_precision=True` selects `mixed_float16` (with Keras's loss
scaling); the classifier always computes in float32.
"""

from kerascnn.checks import OPTIMIZERS
from kerascnn.runs import CHECKPOINT_DIR, RUN_FILES, read_history, read_history_csv
from kerascnn.schedules import SCHEDULES
from kerascnn.training.callbacks import (BestCheckpoint, Deadline, EpochLogger, History,
                                         NaNGuard)
from kerascnn.training.distribute import (PRECISIONS, STRATEGIES, check_precision,
                                          distributable, dtype_policy, is_chief,
                                          keras_multiworker_fixes, make_strategy,
                                          op_determinism, parse_tf_config, resolve_precision)
from kerascnn.training.fitting import FitResult, fit_model, steps_per_epoch
from kerascnn.training.range_test import (LR_FIND_METHODS, LRFindResult, lr_find, plot_lr_find,
                                       suggest_learning_rate)
from kerascnn.training.optimizers import (check_optimizer, compile_model,
                                          current_learning_rate, make_optimizer)
from kerascnn.training.resolve import (build_model, clone_with_weights, data_and_spec,
                                       fit_input_shape, load_data, resolve_spec)
from kerascnn.training.trainer import TrainResult, train

__all__ = [
    "BestCheckpoint", "CHECKPOINT_DIR", "Deadline", "EpochLogger", "FitResult", "History",
    "LRFindResult", "LR_FIND_METHODS", "NaNGuard", "OPTIMIZERS", "PRECISIONS", "RUN_FILES",
    "SCHEDULES", "STRATEGIES", "TrainResult", "build_model", "check_optimizer",
    "check_precision", "clone_with_weights", "compile_model", "current_learning_rate",
    "data_and_spec", "distributable", "dtype_policy", "fit_input_shape", "fit_model",
    "is_chief", "keras_multiworker_fixes", "load_data", "lr_find", "make_optimizer",
    "make_strategy", "op_determinism", "parse_tf_config", "plot_lr_find",
    "read_history", "read_history_csv", "resolve_precision", "resolve_spec",
    "steps_per_epoch", "suggest_learning_rate", "train",
]
