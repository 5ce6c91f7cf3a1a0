"""python -m tools.tune (make tune): Keras Tuner Hyperband over the edge model's
width, dropout and learning rate, scored on the validation split (never the
test set). Writes the best settings as a TrainConfig JSON that `make train`
reads: make train ARGS="--config runs/tune-<stamp>/best_config.json".

The default budget is small (a slice of the data, a few epochs per trial) so
it finishes in minutes on two cores; --big searches on all the data for longer.
Keras Tuner is an optional dependency of this command only (pip install '.[tune]').
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from edge_runtime import atomic, dataset, process
from train.config import add_config_arguments, config_from_args

# edge widths up to 32 keep the model within 400 KB as int8 (width 32: 351k parameters, 36: 443k)
SEARCH_SPACE = {"width": [16, 20, 24, 28, 32], "dropout": (0.1, 0.5), "learning_rate": (1e-3, 1e-2)}


@process.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--max_epochs", type=int, default=4, help="Hyperband's most epochs for one trial (default: %(default)s)")
    parser.add_argument("--hyperband_iterations", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--big", action="store_true", help="all training data, max_epochs 15, 2 Hyperband iterations")
    parser.add_argument("--config", help="base config JSON (default: TrainConfig defaults)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    base = config_from_args(args)
    if base.train_limit is None and not args.big:
        base.train_limit = 12000
    max_epochs, iterations = (15, 2) if args.big else (args.max_epochs, args.hyperband_iterations)
    from train.tensorflow_import import import_tensorflow
    import_tensorflow()
    try:
        import keras_tuner
    except ImportError:
        print("error: keras-tuner is not installed; run `make tune` or pip install '.[tune]'", file=sys.stderr)
        return 2
    import keras

    from train import precision, trainer

    data = dataset.load(base.data_dir)
    split = trainer.stratified_split(data.train_images, data.train_labels, base.val_size, base.seed, base.train_limit)
    aug = trainer.augment_config(base)
    steps = math.ceil(len(split.train_x) / base.batch_size)
    policy = precision.resolve(base.precision)
    out = Path(base.out_dir) / f"tune-{time.strftime('%Y%m%d-%H%M%S')}"

    def build(hp):
        config = dataclasses.replace(
            base, model="edge", epochs=max_epochs,
            width=hp.Choice("width", SEARCH_SPACE["width"]),
            dropout=hp.Float("dropout", *SEARCH_SPACE["dropout"], step=0.1),
            learning_rate=hp.Float("learning_rate", *SEARCH_SPACE["learning_rate"], sampling="log"))
        return trainer.build_and_compile(config, steps, policy)

    tuner = keras_tuner.Hyperband(build, objective="val_accuracy", max_epochs=max_epochs,
                                  hyperband_iterations=iterations, seed=base.seed,
                                  directory=str(out), project_name="hyperband")
    print(f"tuning edge on {len(split.train_x)} training / {len(split.val_x)} validation images, "
          f"max {max_epochs} epochs per trial; results in {out}", flush=True)
    batches = trainer.augmented_batches_class()(split.train_x, trainer.one_hot(split.train_y), base.batch_size, aug, base.seed)
    tuner.search(batches, validation_data=(split.val_x[..., None], trainer.one_hot(split.val_y)), verbose=2,
                 callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=3)])
    best_trials = tuner.oracle.get_best_trials(1)
    if not best_trials or best_trials[0].score is None:
        print(f"error: no tuning trial finished; see the messages above and {out}", file=sys.stderr)
        return 1
    best = best_trials[0].hyperparameters.values
    best_config = dataclasses.replace(base, model="edge", width=best["width"], dropout=round(best["dropout"], 2),
                                      learning_rate=float(best["learning_rate"]), train_limit=None, name=None)
    path = out / "best_config.json"
    atomic.write_text(path, best_config.to_json())
    print(f"best: {json.dumps(best)}\nwrote {path}\ntrain it: make train ARGS=\"--config {path}\"")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
