"""Search CNN architectures with keras-tuner, within a budget.

Modules, by role (as keras-tuner's `engine/`, `tuners/`, `distribute/`):

- `search`: `tune()` and `TuneResult`, the whole search from data to `best/`;
- `hypermodel`: `CNNHyperModel` (the space of `kerascnn.search_space` as a
  keras-tuner `HyperModel`);
- `oracles`: the resampling, deadline and reporting oracles, one per algorithm;
- `tuners`: the tuners and `make_tuner`;
- `leaderboard`: rows, files, the text table and the progress line;
- `resume`: what defines a search on disk and when it can be resumed;
- `storage`: atomic state files, pruning of checkpoints;
- `gradients`: the clean-up that keeps memory flat across trials;
- `chief`, `worker`: the distributed search (configuration in
  `kerascnn.distributed`).
"""

from kerascnn.tuning.hypermodel import CNNHyperModel
from kerascnn.tuning.leaderboard import (format_leaderboard, format_value, leaderboard_rows,
                                         write_leaderboard)
from kerascnn.tuning.search import TuneResult, tune
from kerascnn.tuning.tuners import OBJECTIVE, TUNERS, make_tuner

__all__ = ["CNNHyperModel", "OBJECTIVE", "TUNERS", "TuneResult", "format_leaderboard",
           "format_value", "leaderboard_rows", "make_tuner", "tune", "write_leaderboard"]
