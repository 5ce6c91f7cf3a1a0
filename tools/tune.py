"""python -m tools.tune (make tune): Keras Tuner Hyperband over the edge model's
width, dropout and learning rate, scored on the validation split (never the
test set). Writes the best settings as a TrainConfig JSON that `make train`
reads: make train ARGS="--config runs/tune-<stamp>/best_config.json".

The default budget is small (a slice of the data, a few epochs per trial) so
it finishes in minutes on two cores; --big searches on all the data for longer.
Keras Tuner is an optional dependency of this command only (pip install '.[tune]').

Distributed, with Keras Tuner's own mode: the same command on every machine,
with KERASTUNER_TUNER_ID ("chief" on one, tuner0, tuner1, ... on the others),
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT (the chief's address) set.
The chief holds the search (Keras Tuner's oracle, over gRPC) and writes
best_config.json when every worker has finished; the workers run the trials.
All of them need the same --name, and Hyperband needs the directory shared:
a worker may continue a trial from another's checkpoint (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edge_runtime import atomic, dataset, process
from edge_runtime.errors import UsageError
from train.config import add_config_arguments, config_from_args

# edge widths up to 32 keep the model within 400 KB as int8 (width 32: 351k parameters, 36: 443k)
SEARCH_SPACE = {"width": [16, 20, 24, 28, 32], "dropout": (0.1, 0.5), "learning_rate": (1e-3, 1e-2)}
DISTRIBUTED_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
IDLE_WAIT = 1.0  # s a worker waits before asking the chief again while other workers finish trials


@dataclass(frozen=True)
class Role:
    """This process's part in a search: one process alone, the chief, or a worker."""
    tuner_id: str = "tuner0"  # Keras Tuner's name for a process that runs trials alone
    oracle: str | None = None  # the chief's "ip:port" when distributed

    @property
    def distributed(self) -> bool:
        return self.oracle is not None

    @property
    def chief(self) -> bool:
        return self.distributed and "chief" in self.tuner_id  # Keras Tuner's own test


def role_from_env(environ) -> Role:
    """The Role Keras Tuner's environment variables give, or UsageError. Pure.
    Keras Tuner itself runs alone when only some are set, and takes any port text."""
    present = [name for name in DISTRIBUTED_ENV if environ.get(name)]
    if not present:
        return Role()
    if len(present) < len(DISTRIBUTED_ENV):
        missing = ", ".join(name for name in DISTRIBUTED_ENV if name not in present)
        raise UsageError(f"distributed tuning needs {', '.join(DISTRIBUTED_ENV)}; {missing} not set")
    port = environ["KERASTUNER_ORACLE_PORT"]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"KERASTUNER_ORACLE_PORT must be a port number (1-65535), not {port!r}")
    return Role(environ["KERASTUNER_TUNER_ID"], f"{environ['KERASTUNER_ORACLE_IP']}:{port}")


def check_can_listen(address: str) -> None:
    """UsageError unless the chief can listen on "ip:port" (gRPC would fail later,
    with a traceback)."""
    import socket
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_server((host, int(port))):
            pass
    except OSError as e:
        raise UsageError(f"the chief cannot listen on {address}: {e.strerror or e}; "
                         "pick another KERASTUNER_ORACLE_PORT, or this machine's address") from None


def best_config_values(values: dict) -> dict:
    """TrainConfig fields from a trial's hyperparameter values (Keras Tuner adds its
    own tuner/* entries). Pure."""
    return {"model": "edge", "width": values["width"], "dropout": round(values["dropout"], 2),
            "learning_rate": float(values["learning_rate"])}


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
    role = role_from_env(os.environ)  # what Keras Tuner reads
    if role.distributed and not base.name:
        raise UsageError("distributed tuning needs --name: the same search directory name on the chief and every worker")
    if role.chief:
        check_can_listen(role.oracle)
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
    out = Path(base.out_dir) / (base.name or f"tune-{time.strftime('%Y%m%d-%H%M%S')}")

    def build(hp):
        config = dataclasses.replace(
            base, model="edge", epochs=max_epochs,
            width=hp.Choice("width", SEARCH_SPACE["width"]),
            dropout=hp.Float("dropout", *SEARCH_SPACE["dropout"], step=0.1),
            learning_rate=hp.Float("learning_rate", *SEARCH_SPACE["learning_rate"], sampling="log"))
        return trainer.build_and_compile(config, steps, policy)

    class Hyperband(keras_tuner.Hyperband):
        """Keras Tuner's Hyperband, keeping a record of the trials this process ran, and
        pausing when the chief has no trial to give yet: Keras Tuner asks again at once,
        a loop of requests that takes a core from the chief while others finish."""
        def __init__(self, *args, **kwargs):
            self.record = out / f"trials-{role.tuner_id}.json"  # kept across a continued search
            self.ran = json.loads(self.record.read_text()) if self.record.is_file() else []
            self.asked_without_trial = False
            super().__init__(*args, **kwargs)

        def pre_create_trial(self):
            if self.asked_without_trial:
                time.sleep(IDLE_WAIT)
            self.asked_without_trial = True

        def on_trial_begin(self, trial):
            self.asked_without_trial = False
            super().on_trial_begin(trial)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            done = self.oracle.get_trial(trial.trial_id)  # scored by the oracle, on the chief if distributed
            self.ran.append({"trial": done.trial_id, "score": done.score, "status": done.status,
                             "values": dict(done.hyperparameters.values)})
            atomic.write_text(self.record, json.dumps(self.ran, indent=1))

    tuner = Hyperband(build, objective="val_accuracy", max_epochs=max_epochs,
                      hyperband_iterations=iterations, seed=base.seed,
                      directory=str(out.parent), project_name=out.name)
    if role.chief:
        print(f"chief: holding the search on {role.oracle} for the workers "
              f"(the same command with KERASTUNER_TUNER_ID=tuner0, tuner1, ...); results in {out}", flush=True)
        tuner.search()  # serves the oracle until every worker has been told the search is over
    else:
        print(f"{role.tuner_id}: tuning edge on {len(split.train_x)} training / {len(split.val_x)} validation images, "
              f"max {max_epochs} epochs per trial; results in {out}"
              + (f"; trials from the chief at {role.oracle}" if role.distributed else ""), flush=True)
        batches = trainer.augmented_batches_class()(split.train_x, trainer.one_hot(split.train_y), base.batch_size, aug, base.seed)
        tuner.search(batches, validation_data=(split.val_x[..., None], trainer.one_hot(split.val_y)), verbose=2,
                     callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=3)])
    if role.distributed and not role.chief:
        scores = [t["score"] for t in tuner.ran if t["score"] is not None]
        print(f"{role.tuner_id}: ran {len(tuner.ran)} trial(s)" + (f", its best val_accuracy {max(scores):.4f}" if scores else "")
              + f"; the chief writes {out / 'best_config.json'}", flush=True)
        return 0
    best_trials = tuner.oracle.get_best_trials(1)
    if not best_trials or best_trials[0].score is None:
        print(f"error: no tuning trial finished; see the messages above and {out}", file=sys.stderr)
        return 1
    best = best_trials[0].hyperparameters.values
    best_config = dataclasses.replace(base, **best_config_values(best), train_limit=None, name=None)
    path = out / "best_config.json"
    atomic.write_text(path, best_config.to_json())
    print(f"best: trial {best_trials[0].trial_id}, val_accuracy {best_trials[0].score:.4f}, "
          f"{json.dumps(best_config_values(best))}\n"
          f"wrote {path}\ntrain it: make train ARGS=\"--config {path}\"")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
