"""Train one model and leave everything the converter and a person need in
one run directory (train/rundir.py lists its files).

The test set is touched once, after training, with the best weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime import atomic, dataset
from edge_runtime.contract import CLASS_NAMES
from edge_runtime.evaluation import confusion_counts

from . import augment, distribute, precision
from .config import TrainConfig
from .errors import ConfigError, NoCheckpointError, RunExistsError, TrainingError
from .rundir import LATEST, RunDir


# -- data --------------------------------------------------------------------
@dataclass
class Split:
    train_x: np.ndarray  # uint8 (N, 28, 28)
    train_y: np.ndarray  # uint8 (N,)
    val_x: np.ndarray
    val_y: np.ndarray


def stratified_split(images: np.ndarray, labels: np.ndarray, val_size: int, seed: int,
                     train_limit: int | None = None) -> Split:
    """Hold out val_size images, the same number from every class. Pure given the seed."""
    val_idx, train_idx = dataset.stratified_indices(labels, val_size // len(np.unique(labels)), seed)
    if train_limit:
        train_idx = train_idx[:train_limit]
    return Split(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx])


def training_photos(config: TrainConfig):
    """The run's real photos as model inputs (train/photos.py), or None without any."""
    from edge_runtime.contract import IMAGE_HEIGHT, IMAGE_WIDTH

    from . import photos
    sources = {}
    copies = {}
    if config.photo_dir:
        # One source per dataset, so validation and the reports show each apart.
        photo_dir = photos.find_photo_dir(config.photo_dir)
        held_out = set(config.photo_holdout_list())
        for name in photos.datasets(photo_dir):
            if name not in held_out:
                sources[name] = photos.load_labelled(photo_dir, list(CLASS_NAMES), dataset=name)
                copies[name] = config.photo_copies
    if config.photos:
        sources["photos"] = photos.load_folders(Path(config.photos), list(CLASS_NAMES))
        copies["photos"] = config.own_photo_copies
    if not sources:
        return None
    sources = {k: photos.limited(v, config.photo_limit, config.seed) for k, v in sources.items()}
    return photos.prepare(sources, copies, config.photo_val_fraction, config.seed,
                          len(CLASS_NAMES), (IMAGE_HEIGHT, IMAGE_WIDTH))


def with_base_architecture(config: TrainConfig) -> TrainConfig:
    """For --init_from: the config with the base run's model, width and dropout, so its
    weights fit. ConfigError when the base run is not a finished run."""
    base = RunDir(Path(config.init_from))
    if not base.model.is_file() or not base.config.is_file():
        raise ConfigError(f"--init_from {config.init_from}: not a finished training run (no {base.model.name})")
    saved = TrainConfig.from_dict(json.loads(base.config.read_text()))
    return dataclasses.replace(config, model=saved.model, width=saved.width, dropout=saved.dropout)


def one_hot(labels: np.ndarray, n: int = len(CLASS_NAMES)) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator for one epoch's shuffle and augmentation: a function of (seed, epoch)
    only, so a resumed run sees exactly the batches an uninterrupted one would."""
    return np.random.default_rng([seed, epoch])


def augment_config(config: TrainConfig) -> augment.AugmentConfig:
    """The augmentation a TrainConfig asks for (the erased patch size keeps augment's default)."""
    return augment.AugmentConfig(max_shift=config.max_shift, flip=config.flip, erase_prob=config.erase_prob,
                                 contrast_prob=config.contrast_prob, blur_prob=config.blur_prob)


def augmented_batches_class():
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        """One freshly augmented, shuffled copy of the training set per epoch."""

        def __init__(self, x, targets, batch_size, aug: augment.AugmentConfig, seed: int, first_epoch: int = 0):
            """x: uint8 (N, 28, 28); targets: float32 (N, C), one-hot or soft."""
            super().__init__()
            self.x, self.y, self.batch_size, self.aug, self.seed = x, targets, batch_size, aug, seed
            self.epoch = first_epoch
            self._prepare()

        def _prepare(self):
            rng = epoch_rng(self.seed, self.epoch)
            order = rng.permutation(len(self.x))
            x = self.x[order]
            self.ex = augment.augment(x, self.aug, rng) if self.aug.enabled else x
            self.ey = self.y[order]

        def __len__(self):
            return math.ceil(len(self.x) / self.batch_size)

        def __getitem__(self, i):
            s = slice(i * self.batch_size, (i + 1) * self.batch_size)
            return self.ex[s][..., None], self.ey[s]

        def on_epoch_end(self):
            self.epoch += 1
            self._prepare()

    return AugmentedBatches


# -- callbacks ---------------------------------------------------------------
def minutes_left(epoch_seconds: list[float], epochs_done: int, epochs: int) -> float:
    """Minutes until the last epoch at the median epoch time so far (the median, because
    an epoch now and then takes twice as long on a shared machine). Early stopping may
    end the run sooner."""
    return float(np.median(epoch_seconds)) * (epochs - epochs_done) / 60 if epoch_seconds else 0.0


def _callbacks(run: RunDir, config: TrainConfig, start_time: float, best_so_far: float, strategy=None):
    """The Progress callback writing into `run`. Under a strategy every worker runs it
    with the same logs (fit averages them over workers), so all take the same
    decisions; the time budget is agreed on (distribute.any_worker)."""
    import keras

    class Progress(keras.callbacks.Callback):
        """One line per epoch, checkpoints written atomically, early stopping and a time budget."""

        def __init__(self):
            super().__init__()
            self.best = best_so_far
            self.wait = 0
            self.epoch_start = time.time()
            self.epoch_seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.time() - self.epoch_start
            self.epoch_seconds.append(seconds)
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            val_acc = logs.get("val_accuracy", 0.0)
            improved = val_acc > self.best
            minutes_so_far = (time.time() - start_time) / 60
            left = minutes_left(self.epoch_seconds, epoch + 1, config.epochs)
            print(f"epoch {epoch + 1:3d}/{config.epochs}  loss {logs.get('loss', 0):.4f}  acc {logs.get('accuracy', 0):.4f}"
                  f"  val_loss {logs.get('val_loss', 0):.4f}  val_acc {val_acc:.4f}  lr {lr:.2e}  {seconds:5.1f}s"
                  f"  {minutes_so_far:5.1f} min, {left:4.1f} left" + ("  *best" if improved else ""), flush=True)
            _append_history(run.history, epoch, logs, lr, seconds)
            if improved:
                self.best, self.wait = val_acc, 0
                with atomic.atomic_path(run.model, keep_suffix=True) as tmp:
                    float32_copy(self.model, config).save(tmp)
            else:
                self.wait += 1
            # The resume checkpoint: model with optimizer state, then the epoch it finished.
            with atomic.atomic_path(run.checkpoint, keep_suffix=True) as tmp:
                self.model.save(tmp)
            atomic.write_text(run.checkpoint_state, json.dumps({"epoch": epoch, "best_val_accuracy": self.best}))
            if self.wait >= config.patience:
                print(f"early stop: val_accuracy has not improved for {config.patience} epochs", flush=True)
                self.model.stop_training = True
            if config.max_minutes is not None:
                elapsed = time.time() - start_time
                if distribute.any_worker(strategy, elapsed + np.median(self.epoch_seconds) > config.max_minutes * 60):
                    print(f"time budget: {elapsed / 60:.1f} of {config.max_minutes} minutes used, "
                          "no room for another epoch", flush=True)
                    self.model.stop_training = True

    return Progress()


def _append_history(path: Path, epoch: int, logs: dict, lr: float, seconds: float) -> None:
    history = json.loads(path.read_text()) if path.exists() else []
    history = [h for h in history if h["epoch"] < epoch + 1]  # a resumed run rewrites later epochs
    history.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}, "lr": lr, "seconds": seconds})
    atomic.write_text(path, json.dumps(history, indent=1))


# -- model -------------------------------------------------------------------
def build_model(config: TrainConfig, policy: str = "float32"):
    """The config's zoo model, its layers under Keras dtype policy `policy`."""
    from . import models
    with precision.dtype_policy(policy):
        return models.build(config.model, width=config.width, dropout=config.dropout)


def build_and_compile(config: TrainConfig, steps_per_epoch: int, policy: str = "float32"):
    import keras

    model = build_model(config, policy)
    total = max(1, config.epochs * steps_per_epoch)
    if config.lr_schedule == "cosine":
        warmup = min(int(config.warmup_epochs * steps_per_epoch), total - 1)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=max(1, total - warmup),
            warmup_target=config.learning_rate, warmup_steps=warmup)
    elif config.lr_schedule == "constant":
        lr = config.learning_rate
    else:
        raise ConfigError(f"lr_schedule must be cosine or constant, not {config.lr_schedule!r}")
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=["accuracy"])
    return model


def float32_copy(model, config: TrainConfig):
    """The model as float32 (what model.keras holds): the same architecture built under
    the float32 policy with the trained weights, which are float32 under any policy.
    Decided by the model's own layers, not the config: a resumed checkpoint keeps the
    policy it was trained with."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    copy = build_model(config, "float32")
    copy.set_weights(model.get_weights())
    return copy


# -- evaluation --------------------------------------------------------------
def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(CLASS_NAMES)) -> dict:
    """Accuracy, confusion matrix (rows true, columns predicted) and per-class P/R/F1. Pure."""
    cm = confusion_counts(y_true, y_pred, n)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(n), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(n), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    return {
        "accuracy": float(tp.sum() / max(1, cm.sum())),
        "confusion_matrix": cm.tolist(),
        "per_class": [{"class": CLASS_NAMES[i] if n == len(CLASS_NAMES) else str(i),
                       "precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                       "f1": round(float(f1[i]), 4)} for i in range(n)],
    }


# -- the whole run -----------------------------------------------------------
def run(config: TrainConfig, resume: bool = False, make_reports: bool = True, publish: bool = True) -> Path:
    """Train per `config` into runs/<name>/; `publish` points runs/latest at it when done
    (make compare's runs are not published: `make convert` keeps converting your model)."""
    import keras

    from . import models
    start = time.time()
    strategy = distribute.make_strategy(config.distribute)  # before TensorFlow's first op
    chief = distribute.is_chief(strategy)
    if config.init_from:
        config = with_base_architecture(config)
    name = config.name or f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(config.out_dir) / name
    run = RunDir(run_dir)
    if resume:
        if not run.checkpoint_state.is_file():
            raise NoCheckpointError(f"{run_dir} has no checkpoint to resume from "
                                    f"(looked for {run.checkpoint_state.name})")
    elif run.model.exists() and chief:
        raise RunExistsError(f"{run_dir} already holds a trained model; pick another --name or pass --resume")
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run.config, config.to_json())
        written = run
    else:  # the same files, thrown away (distribute.py)
        written = RunDir(Path(tempfile.mkdtemp(prefix=f"{name}-worker-")))
    print(f"run directory: {run_dir}\nconfig:\n{config.to_json()}", flush=True)
    if strategy is not None:
        print(f"distributed: {config.distribute}, {strategy.num_replicas_in_sync} replica(s); "
              + ("this process is the chief and writes the run directory" if chief
                 else f"this worker writes nothing (scratch copy in {written.path})"), flush=True)

    data = dataset.load(config.data_dir, allow_download=True)
    split = stratified_split(data.train_images, data.train_labels, config.val_size, config.seed, config.train_limit)
    print(f"data: {data.source}  train {len(split.train_x)}  validation {len(split.val_x)}  "
          f"test {len(data.test_images)} (used once, at the end)", flush=True)
    t = time.time()
    photo = training_photos(config)
    train_x, train_targets = split.train_x, one_hot(split.train_y)
    val_x, val_targets = split.val_x, one_hot(split.val_y)
    if photo is not None:
        # In-class held-out photos join the validation set; `none` ones have no right answer.
        known = photo.val_y >= 0
        train_x = np.concatenate([train_x, photo.train_x])
        train_targets = np.concatenate([train_targets, photo.train_targets])
        val_x = np.concatenate([val_x, photo.val_x[known]])
        val_targets = np.concatenate([val_targets, one_hot(photo.val_y[known])])
        print(f"photos: {json.dumps(photo.counts)} ({len(photo.train_x)} augmented training inputs, "
              f"{time.time() - t:.0f} s)", flush=True)

    keras.utils.set_random_seed(config.seed)
    policy = precision.resolve(config.precision)
    print(f"precision: {policy}", flush=True)
    steps = distribute.steps_per_epoch(len(train_x), config.batch_size, distributed=strategy is not None)
    first_epoch, best = 0, -1.0
    if resume:
        state = json.loads(run.checkpoint_state.read_text())
        first_epoch, best = state["epoch"] + 1, state["best_val_accuracy"]
        with distribute.scope(strategy):
            model = keras.models.load_model(run.checkpoint)
        print(f"resuming after epoch {first_epoch} (best val_accuracy so far {best:.4f})", flush=True)
    else:
        with distribute.scope(strategy):
            model = build_and_compile(config, steps, policy)
        if config.init_from:
            model.set_weights(keras.models.load_model(RunDir(Path(config.init_from)).model).get_weights())
            print(f"starting from the weights of {config.init_from}", flush=True)
    print(f"model {config.model}: {model.count_params():,} parameters, "
          f"{models.count_macs(model) / 1e6:.2f}M MACs per image", flush=True)

    aug = augment_config(config)
    batches = augmented_batches_class()(train_x, train_targets, config.batch_size, aug, config.seed, first_epoch)
    progress = _callbacks(written, config, start, best, strategy)
    if strategy is None:
        train_data, validation = batches, (val_x[..., None], val_targets)
    else:
        train_data = distribute.distributed_batches(strategy, batches, steps)
        validation = (val_x[..., None].astype(np.float32), val_targets)
    interrupted = False
    if first_epoch < config.epochs:
        try:
            model.fit(train_data, epochs=config.epochs, initial_epoch=first_epoch, verbose=0,
                      steps_per_epoch=steps if strategy is not None else None, shuffle=strategy is None,
                      validation_data=validation, callbacks=[progress])
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: finishing with the best checkpoint so far (Ctrl-C again to abort)", flush=True)
        except Exception as e:
            lost = distribute.lost_contact(e) if strategy is not None else None
            if lost is None:
                raise
            raise TrainingError(f"lost contact with another worker ({lost}); the last finished epoch "
                                f"is in {run_dir}: run the same commands with --resume --name {name}") from None
        finally:
            if not chief:
                shutil.rmtree(written.path, ignore_errors=True)
    train_seconds = time.time() - start
    if not chief:
        shutil.rmtree(written.path, ignore_errors=True)  # also when there was no epoch left to run
        if not interrupted:
            print(f"worker done after {train_seconds / 60:.1f} min; waiting for the chief to write {run_dir}", flush=True)
            distribute.wait_for_all(strategy)
        return run_dir
    if not run.model.exists():
        raise TrainingError("training stopped before the first epoch finished; nothing to keep")

    best_model = keras.models.load_model(run.model)
    probabilities = best_model.predict(data.test_images[..., None], batch_size=512, verbose=0)
    predicted = probabilities.argmax(1)
    test_loss = float(keras.losses.CategoricalCrossentropy()(one_hot(data.test_labels), probabilities))
    metrics = {
        "model": config.model,
        "test_accuracy": None,  # filled below, kept first for people reading the file
        "test_loss": test_loss,
        "best_val_accuracy": progress.best,
        "epochs_run": len(json.loads(run.history.read_text())),
        "interrupted": interrupted,
        "parameters": int(best_model.count_params()),
        "macs_per_image": models.count_macs(best_model),
        "train_seconds": round(train_seconds, 1),
        "precision": policy,
        "distribute": {"strategy": config.distribute,
                       "replicas": strategy.num_replicas_in_sync if strategy is not None else 1},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "versions": library_versions(),
        **classification_metrics(data.test_labels, predicted),
    }
    metrics["test_accuracy"] = metrics.pop("accuracy")
    photo_predicted = None
    if photo is not None:
        from . import photos
        photo_probabilities = best_model.predict(photo.val_x[..., None], batch_size=512, verbose=0)
        photo_predicted = photo_probabilities.argmax(1)
        metrics["photos"] = {"counts": photo.counts,
                             **{f"val_{source}": photos.evaluate(photo_probabilities[photo.val_source == source],
                                                                 photo.val_y[photo.val_source == source])
                                for source in photo.counts}}
    atomic.write_text(run.metrics, json.dumps(metrics, indent=2))
    print(f"test accuracy {metrics['test_accuracy']:.4f}  loss {test_loss:.4f}  "
          f"({metrics['epochs_run']} epochs, {train_seconds / 60:.1f} min)", flush=True)
    for key, figures in (metrics.get("photos") or {}).items():
        if key.startswith("val_"):
            print(f"held-out photos ({key[4:]}): {json.dumps(figures)}", flush=True)

    if make_reports:
        from . import reports
        reports.write_all(run, split, data.test_images, data.test_labels, predicted, metrics)
        if photo is not None and photo_predicted is not None:
            known = photo.val_y >= 0
            if known.any():
                reports.prediction_montage(photo.val_x[known], photo.val_y[known], photo_predicted[known],
                                           run.report("photo_predictions"))
    if publish:
        atomic.replace_symlink(Path(config.out_dir) / LATEST, name)
        print(f"wrote {run_dir}; {Path(config.out_dir) / LATEST} -> {name}", flush=True)
    else:
        print(f"wrote {run_dir}", flush=True)
    if not interrupted:  # an interrupted chief left the others mid-epoch; they stop on their own
        distribute.wait_for_all(strategy)  # the workers exit with the chief
    return run_dir


def library_versions() -> dict:
    """Versions of what trained the model, recorded in metrics.json and the model's metadata."""
    import keras
    import tensorflow as tf
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
