"""A search on disk: keras-tuner's state files written atomically, and the weights
of only the best trials kept.

keras-tuner writes `oracle.json`, `trial.json`, `tuner0.json` and
`build_config.json` with a plain `open(..., "w")`; a `kill -9` in the middle
leaves half a JSON file that no resume can read. `save_state` writes them
through `kerascnn.files` instead (temporary file + rename).

`prune_checkpoints` keeps the weights of the best K completed trials and
deletes the others as the search goes (trials that a later rung or Hyperband
round may continue are kept until they can no longer be); the leaderboard keeps
every trial.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from kerascnn.files import atomic_write_text

logger = logging.getLogger(__name__)


def save_state(path: str, obj: Any) -> str:
    """keras-tuner's `utils.save_json`, written atomically (temporary file + rename)."""
    text = json.dumps(obj)
    atomic_write_text(path, text)
    return text


def protected_trials(oracle) -> set[str]:
    """Trials whose weights a later trial may load (open brackets and rungs)."""
    ids: set[str] = set()
    for bracket in getattr(oracle, "_brackets", None) or []:
        for round_info in bracket.get("rounds", []):
            for info in round_info:
                ids.add(str(info.get("id")))
    protected = getattr(oracle, "protected_trials", None)
    if callable(protected):
        ids |= set(protected())
    return ids


def prune_checkpoints(oracle, project_dir: Path, keep: int, final: bool = False) -> list[str]:
    """Delete the weights of every trial but the best `keep` completed ones.

    Running trials, and trials that a later trial may continue, keep their
    weights; their `trial.json` (and so the leaderboard) always stay.

    Args:
        oracle: the keras-tuner oracle (on the chief, or a local search).
        project_dir: the search folder with `trial_*/`.
        keep: int >= 1. How many of the best completed trials keep weights.
        final: bool. The search is over: open brackets no longer protect
            their trials. Defaults to `False`.

    Returns:
        The ids of the trials whose weights were deleted now.
    """
    completed = [t for t in oracle.trials.values()
                 if t.status == "COMPLETED" and t.score is not None
                 and not (isinstance(t.score, float) and math.isnan(t.score))]
    reverse = getattr(oracle.objective, "direction", "max") == "max"
    completed.sort(key=lambda t: t.score, reverse=reverse)
    keep_ids = {t.trial_id for t in completed[:keep]}
    keep_ids |= {t.trial_id for t in oracle.ongoing_trials.values()}
    if not final:
        keep_ids |= protected_trials(oracle)
    keep_ids |= {str(t) for t in getattr(oracle, "_retry_queue", [])}
    deleted = []
    for trial_id, trial in oracle.trials.items():
        if trial_id in keep_ids or trial.status == "RUNNING":
            continue
        removed = False
        for path in Path(project_dir, f"trial_{trial_id}").glob("checkpoint*"):
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
            except OSError as e:
                logger.warning("Could not delete %s: %s", path, e)
        if removed:
            deleted.append(trial_id)
    if deleted:
        logger.debug("Deleted the weights of trial(s) %s (keeping the best %d).",
                     ", ".join(deleted), keep)
    return deleted
