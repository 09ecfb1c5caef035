"""How long a candidate will train: a cost model from the analysis, calibrated here.

Before a candidate trains, the search needs its seconds: to skip one that
cannot finish its rung in the time left, to size rungs and the final
training, and for the ETA. `kerascnn.analysis` already knows, per sample,
the multiply-accumulates (MACs), the activation values every layer writes and
the parameters. Training time on a CPU is close to linear in them:

    seconds = epochs * (images + EVAL_COST * validation_images) * (
                  a * MACs                 # convolutions and dense layers
                + b * activations          # memory-bound: ReLU, BN, pooling, their gradients
                + c * params / batch_size  # one optimizer update per batch
                + d)                       # per image: input pipeline, step overhead
            + e * epochs                   # per epoch: Keras's epoch set-up, validation start
            + f                            # per trial: build, trace, first batch

The six coefficients start from a prior (measured on a 2-core x86 CPU), and
every measured run refines them (`observe`, and `probe` when nothing was
measured yet): a least-squares fit of relative errors, each coefficient
pulled toward its prior value (a light ridge) so that what one or two runs
cannot tell apart stays in the prior's proportions, and every coefficient kept
non-negative, so the prediction never falls when a network grows.

The state (prior, observations) is plain JSON (`get_state` / `from_state`),
kept beside the search so a resumed search predicts as well as before.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, Optional, Sequence

import keras
import numpy as np

from kerascnn.analysis import Analysis, analyze
from kerascnn.builders import build_cnn
from kerascnn.checks import InputError, received
from kerascnn.spec import CNNSpec

logger = logging.getLogger(__name__)

TERMS = ("macs", "activations", "params_per_batch", "images", "epochs", "trial")
# The coefficients before any measurement (seconds per unit), fitted to trials
# of 1-3 block networks on the 28x28 sample on a shared 2-core Zen 4 CPU
# (TensorFlow 2.21): 0.16 ns per MAC-image (forward + backward), 0.15 ns per
# activation value, 1 us per image, 0.12 s per epoch, 1.2 s per trial.
PRIOR = {"macs": 1.6e-10, "activations": 1.5e-10, "params_per_batch": 6e-11, "images": 1e-6,
         "epochs": 0.12, "trial": 1.2}
# evaluating one validation image costs about a third of training on one
EVAL_COST = 1.0 / 3.0
# how strongly the coefficients are pulled toward the (scaled) prior
RIDGE = 0.001
STATE_VERSION = 1


def features(analysis: Analysis, images: float, epochs: float, *,
             validation_images: float = 0.0, batch_size: int = 128) -> list[float]:
    """The six terms of the model for one run (before the coefficients)."""
    seen = float(epochs) * (float(images) + EVAL_COST * float(validation_images))
    activations = sum(layer.activation_size for layer in analysis.layers)
    return [seen * analysis.total_macs, seen * activations,
            seen * analysis.total_params / float(batch_size), seen, float(epochs), 1.0]


class CostModel:
    """Predicted training seconds of a candidate, calibrated by what was measured.

    Args:
        prior: dict of the six coefficients (`TERMS`) before calibration.
            Defaults to `PRIOR`.
        batch_size: int. The training batch size. Defaults to 128.
        ridge: float. Pull of the fit toward the prior scaled to the data
            (0 = plain least squares). Defaults to `RIDGE`.

    Example:

    >>> model = CostModel()
    >>> model.observe(analysis, images=5400, epochs=2, seconds=31.0)
    >>> model.predict(other_analysis, images=1350, epochs=1)
    """

    def __init__(self, prior: Optional[Mapping[str, float]] = None, *, batch_size: int = 128,
                 ridge: float = RIDGE):
        prior = dict(PRIOR if prior is None else prior)
        if sorted(prior) != sorted(TERMS) or not all(
                isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                for v in prior.values()):
            raise InputError(f"prior needs a positive coefficient for each of "
                             f"{', '.join(TERMS)}. {received('prior', prior)}")
        self.prior = {k: float(prior[k]) for k in TERMS}
        self.batch_size = int(batch_size)
        self.ridge = float(ridge)
        self.observations: list[dict[str, Any]] = []
        self.coefficients = dict(self.prior)

    # -- predicting ---------------------------------------------------------

    def predict(self, analysis: Analysis, images: float, epochs: float = 1, *,
                validation_images: float = 0.0) -> float:
        """Predicted wall seconds to train on `images` for `epochs` (one trial)."""
        f = features(analysis, images, epochs, validation_images=validation_images,
                     batch_size=self.batch_size)
        return float(sum(self.coefficients[k] * v for k, v in zip(TERMS, f)))

    def seconds_per_image(self, analysis: Analysis) -> float:
        """Predicted seconds per training image, once the trial is running."""
        f = features(analysis, 1, 1, batch_size=self.batch_size)
        return float(sum(self.coefficients[k] * v for k, v in zip(TERMS[:4], f[:4])))

    def epochs_within(self, analysis: Analysis, images: float, seconds: float, *,
                      validation_images: float = 0.0, include_trial: bool = True) -> float:
        """How many epochs (fractional) fit in `seconds`; 0 if not even the set-up does."""
        fixed = self.coefficients["trial"] if include_trial else 0.0
        per_epoch = self.predict(analysis, images, 1, validation_images=validation_images) \
            - self.coefficients["trial"]
        return max(0.0, (seconds - fixed) / per_epoch) if per_epoch > 0 else math.inf

    # -- calibrating --------------------------------------------------------

    def observe(self, analysis: Analysis, images: float, epochs: float, seconds: float, *,
                validation_images: float = 0.0, label: Optional[str] = None) -> None:
        """Record one measured run (a trial, a probe) and refit the coefficients."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise InputError(f"seconds must be a positive number. {received('seconds', seconds)}")
        if not (epochs > 0 and images > 0):
            raise InputError(f"A measured run needs images and epochs above 0. "
                             f"{received('images', images)}, {received('epochs', epochs)}")
        self.observations.append({
            "features": features(analysis, images, epochs, validation_images=validation_images,
                                 batch_size=self.batch_size),
            "seconds": float(seconds), "label": label})
        self.fit()

    def fit(self) -> dict[str, float]:
        """Refit the coefficients to every observation; returns them."""
        if not self.observations:
            self.coefficients = dict(self.prior)
            return self.coefficients
        x = np.array([o["features"] for o in self.observations], dtype=np.float64)
        y = np.array([o["seconds"] for o in self.observations], dtype=np.float64)
        base = np.array([self.prior[k] for k in TERMS])
        # columns scaled by the prior: the unknowns are multipliers of the prior,
        # rows divided by the measured seconds: the errors are relative
        a = x * base / y[:, None]
        # each multiplier pulled toward 1 (the prior), never below 0: what one
        # observation cannot tell apart stays in the prior's proportions, and
        # the terms that dominate it absorb its deviation
        s = self._ridge_nonnegative(a, np.ones(len(y)), 1.0)
        self.coefficients = {k: float(v) for k, v in zip(TERMS, base * s)}
        return self.coefficients

    def _ridge_nonnegative(self, a: np.ndarray, target: np.ndarray, scale: float) -> np.ndarray:
        # min |a s - 1|^2 + ridge * n_terms * |s - scale|^2 with s >= 0:
        # solve, fix the negative ones at 0, solve again for the rest
        n = a.shape[1]
        free = np.ones(n, dtype=bool)
        s = np.full(n, scale)
        for _ in range(n):
            s = np.zeros(n)
            idx = np.flatnonzero(free)
            sub = a[:, idx]
            root = math.sqrt(self.ridge * n)
            lhs = np.vstack([sub, root * np.eye(len(idx))])
            rhs = np.concatenate([target, root * scale * np.ones(len(idx))])
            s[idx] = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
            if (s[idx] >= 0).all():
                break
            free[idx[s[idx] < 0]] = False
            s[~free] = 0.0
        return np.maximum(s, 0.0)

    def errors(self) -> list[float]:
        """Relative error (predicted / measured - 1) on each observation, with today's fit."""
        return [sum(self.coefficients[k] * v for k, v in zip(TERMS, o["features"]))
                / o["seconds"] - 1.0 for o in self.observations]

    # -- state --------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (JSON-able)."""
        return {"version": STATE_VERSION, "prior": dict(self.prior),
                "batch_size": self.batch_size, "ridge": self.ridge,
                "observations": [dict(o) for o in self.observations],
                "coefficients": dict(self.coefficients)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "CostModel":
        """The model `get_state` described, refitted to its observations."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise InputError(f"Not a cost-model state of version {STATE_VERSION}. "
                             f"{received('version', getattr(state, 'get', dict)('version'))}")
        model = cls(state["prior"], batch_size=state["batch_size"], ridge=state["ridge"])
        model.observations = [{"features": [float(v) for v in o["features"]],
                               "seconds": float(o["seconds"]), "label": o.get("label")}
                              for o in state["observations"]]
        model.fit()
        return model


# ---------------------------------------------------------------------------
# The timing probe: a few real training steps when nothing was measured yet
# ---------------------------------------------------------------------------

PROBE_SPECS = (dict(conv_blocks=1, convs_per_block=1, filters=8, dense_units=()),
               dict(conv_blocks=2, convs_per_block=2, filters=32, dense_units=()))


def probe(model: CostModel, input_shape: Sequence[int], num_classes: int, *,
          images: int = 512, seconds: float = 6.0) -> CostModel:
    """Time two small networks for a few batches on random images and calibrate `model`.

    The first `fit` of each network is timed with its tracing (the per-trial
    cost), the second without; both are recorded as observations. A probe that
    would overrun `seconds` (a very large input) uses fewer images.

    Args:
        model: `CostModel` to calibrate (observations are added to it).
        input_shape: tuple. The network's input shape (height, width, channels).
        num_classes: int. Number of classes.
        images: int. Random images per timed epoch. Defaults to 512.
        seconds: float. Rough cap on the whole probe. Defaults to 6.

    Returns:
        `model`, calibrated.
    """
    shape = tuple(int(v) for v in input_shape)
    rng = np.random.default_rng(0)
    spent = time.perf_counter()
    for fields in PROBE_SPECS:
        try:
            spec = CNNSpec(input_shape=shape, num_classes=int(num_classes), padding="same",
                           **fields)
            analysis = analyze(spec)
        except ValueError:  # too small for two blocks: the smaller probe is enough
            continue
        predicted = model.predict(analysis, images, 1)
        n = images
        if predicted > seconds / 4:  # keep the probe cheap on large inputs
            n = max(model.batch_size, int(images * seconds / 4 / predicted))
        x = rng.random((n, *shape), dtype=np.float32)
        y = rng.integers(0, num_classes, size=n)
        net = build_cnn(spec)
        net.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
        start = time.perf_counter()
        net.fit(x, y, batch_size=model.batch_size, epochs=1, verbose=0)
        first = time.perf_counter() - start
        start = time.perf_counter()
        net.fit(x, y, batch_size=model.batch_size, epochs=1, verbose=0)
        second = time.perf_counter() - start
        model.observations.append({"features": features(analysis, n, 1,
                                                         batch_size=model.batch_size),
                                   "seconds": first, "label": f"probe {spec.conv_blocks}b"})
        warm = features(analysis, n, 1, batch_size=model.batch_size)
        warm[-1] = 0.0  # no tracing in the second fit
        model.observations.append({"features": warm, "seconds": second,
                                   "label": f"probe {spec.conv_blocks}b warm"})
        del net
        keras.backend.clear_session()
        if time.perf_counter() - spent > seconds:
            break
    model.fit()
    logger.debug("cost model after the probe (%.1fs): %s", time.perf_counter() - spent,
                 model.coefficients)
    return model
