"""`best/` of a search: a usable model from the end of the first trial, the final one at the end.

- `BestWriter.write_checkpoint(trial)`: the leader's search checkpoint (the
  epoch with the best validation accuracy that keras-tuner saved), rebuilt and
  saved as `best/model.keras` with `best/spec.yaml` and a `best/metrics.json`
  that says it is the search checkpoint, not yet tested. Called after every
  trial that changes the leader, so an interrupted search still leaves a
  usable model (anytime).
- `BestWriter.finish(model, ...)`: tests the chosen model once and writes its
  files for good, `metrics.json` saying which model it is and why.

Every saved model is compiled plainly (Keras's sparse cross-entropy, no
schedule object), so `keras.saving.load_model` reads it without kerascnn.
"""

from __future__ import annotations

import gc
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import keras

from kerascnn.files import write_json
from kerascnn.runs import save_model
from kerascnn.training import compile_model

logger = logging.getLogger(__name__)

BEST_DIR = "best"


class BestWriter:
    """Writes `best/` of a search folder.

    Args:
        project_dir: Path. The search folder.
        hypermodel: `CNNHyperModel`.
        checkpoint: callable(trial_id) -> str. The path of a trial's weights.
        class_names: list of str, stored in the model file.
    """

    def __init__(self, project_dir: Path, hypermodel, checkpoint: Callable[[str], str],
                 class_names: Sequence[str] = ()):
        self.dir = Path(project_dir) / BEST_DIR
        self.hypermodel = hypermodel
        self.checkpoint = checkpoint
        self.class_names = [str(c) for c in class_names]
        self.written: Optional[str] = None  # the trial whose checkpoint best/ holds

    def load_checkpoint(self, trial) -> keras.Model:
        """A trial's best checkpoint in a freshly built, plainly compiled model."""
        values = self.hypermodel.space.values_from(trial.hyperparameters.values)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Skipping variable loading.*")
            model = self.hypermodel.build(trial.hyperparameters.copy())
            model.load_weights(self.checkpoint(trial.trial_id))
        return plain_compile(model, values)

    def write_checkpoint(self, trial, row: dict[str, Any]) -> None:
        """Save a trial's search checkpoint as `best/` (untested: the search goes on)."""
        if trial.trial_id == self.written:
            return
        model = self.load_checkpoint(trial)
        self._save(model, trial, {
            "model": "search checkpoint", "trial_id": trial.trial_id,
            "val_accuracy": None if trial.score is None else float(trial.score),
            "test_accuracy": None, "params": row.get("params"), "macs": row.get("macs"),
            "final_model": f"search checkpoint of trial {trial.trial_id}, written while the "
                           f"search runs; not tested yet"})
        self.written = trial.trial_id
        del model
        keras.backend.clear_session()
        gc.collect()

    def finish(self, model: keras.Model, trial, metrics: dict[str, Any], test_data) -> dict:
        """Test `model` once, then write it and its metrics as `best/`; returns the metrics."""
        evaluation = model.evaluate(test_data, verbose=0, return_dict=True)
        accuracy = evaluation.get("accuracy", evaluation.get("compile_metrics", 0.0))
        metrics = {"test_accuracy": float(accuracy),
                   "test_loss": float(evaluation["loss"]), **metrics}
        self._save(model, trial, metrics)
        return metrics

    def _save(self, model: keras.Model, trial, metrics: dict[str, Any]) -> None:
        space = self.hypermodel.space
        values = space.values_from(trial.hyperparameters.values)
        spec = space.spec(values)
        if model.optimizer is not None and not model.optimizer.built:
            # saved with its (fresh) slots, so loading the file does not warn about them
            model.optimizer.build(model.trainable_variables)
        self.dir.mkdir(parents=True, exist_ok=True)
        save_model(model, self.dir / "model.keras", class_names=self.class_names, spec=spec,
                   trial_id=trial.trial_id, hyperparameters=values)
        spec.save(self.dir / "spec.yaml")
        searched = {k: values[k] for k in space.hp_names(values)}
        write_json(self.dir / "metrics.json", {
            **metrics, "learning_rate": values.get("learning_rate"),
            "optimizer": values.get("optimizer"), "hyperparameters": searched})

    @property
    def model_path(self) -> Path:
        return self.dir / "model.keras"


def plain_compile(model: keras.Model, values: dict[str, Any]) -> keras.Model:
    """Compile with Keras's own loss and a constant rate (a file any Keras can load)."""
    return compile_model(model, optimizer=values.get("optimizer", "adam"),
                         learning_rate=float(values.get("learning_rate", 1e-3)))
