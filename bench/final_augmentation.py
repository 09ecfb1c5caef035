"""Benchmark: the final training's shift augmentation, at the final phase's length.

    python bench/final_augmentation.py                    # Fashion-MNIST sample, 3 seeds
    python bench/final_augmentation.py --dataset digits   # 8x8 digits (bench/search.py's split)
    python bench/final_augmentation.py --dataset patches  # colour 32x32 photo crops (idem)
    python bench/final_augmentation.py --quick            # sample, 1 seed, 40 s per run

A search's trials learn without augmentation: they are a few epochs long, and
a shift by a tenth of the image cost 3.7 points on the sample in about ten
epochs (bench/recipe_ablation.py). The final training then trains the winner
again for many more epochs (16 to 40 on the sample in the default 3-minute
budget, hundreds on 8x8 digits), and adds `FINAL_AUGMENTATION`
(`kerascnn.tuning.final`). This script measures that choice where it is made:

- the final training itself (`kerascnn.tuning.final.final_train`: train +
  half of validation, one-cycle on the clock, the other half held out), for
  `--seconds` wall seconds (the final phase of `kerascnn tune`'s default
  3-minute budget gets about 85);
- the network the searches of bench/search.py chose on the sample and on
  digits: the VGG-style seed of `kerascnn.tuning.halving.SEEDS` (two blocks of
  two 3x3 convolutions, 32 then 64 filters, batch norm, dropout 0.5, adam at
  3e-3, label smoothing 0.1), as the default search space builds it;
- three variants, interleaved per seed: no augmentation, `FINAL_AUGMENTATION`
  (a shift by up to 5% of the image) and the space's `DEFAULT_AUGMENTATION`
  (10%). Per variant: the mean test accuracy over seeds, its change from no
  augmentation in points, and the held-out accuracy the final training is
  judged by.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import add_bench_options, emit, machine, say, use_options  # noqa: E402

from kerascnn import runtime  # noqa: E402

runtime.start()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerascnn.analysis import analyze  # noqa: E402
from kerascnn.data import load_dataset, network_input_shape, preprocessing_layers  # noqa: E402
from kerascnn.search_space import DEFAULT_AUGMENTATION  # noqa: E402
from kerascnn.tuning.cost import CostModel  # noqa: E402
from kerascnn.tuning.final import FINAL_AUGMENTATION, final_train  # noqa: E402
from kerascnn.tuning.halving import SEEDS, seed_candidates  # noqa: E402
from kerascnn.tuning.hypermodel import CNNHyperModel, compile_trial  # noqa: E402

from search import SEED, VALIDATION_SPLIT, resolve_dataset  # noqa: E402

VARIANTS = {"none": (), "final": FINAL_AUGMENTATION, "space": DEFAULT_AUGMENTATION}


def run(bundle, hypermodel, values, augmentation, *, seconds: float, seed: int) -> dict:
    """One final training of the seed network with `augmentation`; its test accuracy."""
    spec = dataclasses.replace(hypermodel.space.spec(values),
                               augmentation=tuple(dict(e) for e in augmentation))
    keras.utils.set_random_seed(seed)

    def compile_fn(model):
        return compile_trial(model, spec, optimizer=values["optimizer"],
                             learning_rate=float(values["learning_rate"]),
                             label_smoothing=values["label_smoothing"])

    # the cost model only sizes the epoch cap here: the clock ends the training
    cost = CostModel(batch_size=int(bundle.batch_size))
    cost.epochs_within = lambda *args, **kwargs: 10_000.0
    reference = compile_fn(hypermodel.network(spec))  # stands in for the search checkpoint
    with tempfile.TemporaryDirectory() as folder:
        result = final_train(lambda: hypermodel.network(spec), reference, bundle,
                             directory=folder, deadline=time.time() + seconds, cost=cost,
                             analysis=analyze(spec), learning_rate=float(values["learning_rate"]),
                             seed=seed, compile_fn=compile_fn, min_epochs=1)
        model = result.model if result.model is not None else keras.saving.load_model(
            result.model_path, compile=False)
        x, y = bundle.arrays("test")
        predicted = model.predict(x, batch_size=256, verbose=0).argmax(-1)
    return {"test": float(np.mean(predicted == y.reshape(-1))), "epochs": result.epochs,
            "holdout": result.holdout_accuracy_final}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sample, 1 seed, 40 s per run")
    parser.add_argument("--dataset", default="sample",
                        help="sample, digits, patches, or anything kerascnn reads "
                             "(default: sample)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="wall seconds per final training (default 85; 40 quick)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; 1 quick)")
    add_bench_options(parser)
    args = use_options(parser.parse_args(argv))
    seconds = args.seconds or (40.0 if args.quick else 85.0)
    seeds = args.seeds or (1 if args.quick else 3)
    if seconds <= 0 or seeds < 1:
        parser.error(f"--seconds must be above 0 and --seeds at least 1. "
                     f"Received: --seconds {seconds}, --seeds {seeds}")
    with tempfile.TemporaryDirectory() as folder:
        source = resolve_dataset(args.dataset, Path(folder))
        bundle = load_dataset(source, validation_split=VALIDATION_SPLIT, seed=SEED,
                              batch_size=128)
        bundle.arrays("test")  # read while the folder exists
        hypermodel = CNNHyperModel(tuple(network_input_shape(bundle)), bundle.num_classes,
                                   preprocessing=lambda: list(preprocessing_layers(bundle)),
                                   raw_input_shape=tuple(bundle.input_shape), seed=SEED)
        space = hypermodel.space
        vgg = seed_candidates(space, SEEDS[-1:])[0]  # the VGG-style seed
        values = space.values_from(vgg)
        say(f"{args.dataset}: {space.spec(values).conv_blocks} blocks x "
            f"{space.spec(values).convs_per_block} convolutions, {seconds:.0f} s per final "
            f"training, {seeds} seed(s), variants {', '.join(VARIANTS)}")
        runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for seed in range(seeds):
            for name, augmentation in VARIANTS.items():
                out = run(bundle, hypermodel, values, augmentation, seconds=seconds, seed=seed)
                runs[name].append(out)
                say(f"seed {seed} {name:>5}: test {out['test']:.4f}, held out "
                    f"{out['holdout']:.4f}, {out['epochs']} epochs")
    figures: dict = {"dataset": args.dataset, "seconds": seconds, "seeds": seeds,
                     "quick": args.quick}
    base = statistics.mean(r["test"] for r in runs["none"])
    for name, results in runs.items():
        tests = [r["test"] for r in results]
        figures[f"{name}_test_accuracy"] = statistics.mean(tests)
        figures[f"{name}_test_spread"] = max(tests) - min(tests)
        figures[f"{name}_holdout_accuracy"] = statistics.mean(r["holdout"] for r in results)
        figures[f"{name}_epochs"] = statistics.mean(r["epochs"] for r in results)
        if name != "none":
            figures[f"{name}_points"] = 100 * (statistics.mean(tests) - base)
    figures["final_augmentation"] = [dict(e) for e in FINAL_AUGMENTATION]
    figures["machine"] = machine()
    name = {"sample": "final_augmentation", "digits": "final_augmentation_digits",
            "patches": "final_augmentation_patches"}.get(
        args.dataset, "final_augmentation_other")
    emit(name, **figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
