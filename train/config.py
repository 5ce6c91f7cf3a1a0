"""The training configuration: one dataclass, every field a command-line flag.
(The flag generation is shared with the converter's ConvertConfig.)

The argparse flags are generated from the fields, so a new setting is one
line here and can't drift from the CLI. The config is printed at start and
saved as config.json in the run directory; `--config FILE` reads such a file
back (the tuner writes its best config in this format), and flags given
after it override its fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


# The model zoo's names, in the order the tutorials build them up (train/models.py).
ZOO = ("mlp", "cnn", "minivgg", "edge")


@dataclass
class TrainConfig:
    model: str = field(default="edge", metadata={"help": ", ".join(ZOO[:-1]) + " or " + ZOO[-1]})
    width: int | None = field(default=None, metadata={"help": "base number of filters/units (None: the model's default)"})
    dropout: float | None = field(default=None, metadata={"help": "dropout before the classifier (None: the model's default)"})
    epochs: int = field(default=50, metadata={"help": "maximum epochs (the cosine schedule ends at the last one)"})
    batch_size: int = 128
    learning_rate: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW)"})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine (linear warm-up, cosine decay to 0 at the last epoch) or constant"})
    warmup_epochs: float = 1.0
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW decoupled weight decay"})
    label_smoothing: float = 0.1
    max_shift: int = field(default=2, metadata={"help": "augmentation: random shift, pixels"})
    flip: bool = field(default=True, metadata={"help": "augmentation: random left-right flip"})
    erase_prob: float = field(default=0.2, metadata={"help": "augmentation: random-erasing probability"})
    contrast_prob: float = field(default=0.0, metadata={"help": "augmentation: random gain/gamma probability"})
    blur_prob: float = field(default=0.0, metadata={"help": "augmentation: 3x3 blur probability"})
    photo_dir: str | None = field(default="data/photos", metadata={"help": "labelled real photos (labels.csv) trained on beside Fashion-MNIST; '' for none"})
    photo_holdout: str = field(default="", metadata={"help": "comma-separated source datasets of --photo_dir left out of training and validation, for the cross-source benchmark (make real-photos)"})
    photos: str | None = field(default=None, metadata={"help": "your own photos too: one folder per class name (my-photos/Sneaker/1.jpg); 'none' for things of no class"})
    photo_copies: int = field(default=4, metadata={"help": "augmented copies of each --photo_dir training photo per epoch (the first as it is)"})
    own_photo_copies: int = field(default=20, metadata={"help": "augmented copies of each of your own (--photos) training photos per epoch"})
    init_from: str | None = field(default=None, metadata={"help": "start from this run's trained weights (its model, width and dropout): a short fine-tune, e.g. --init_from runs/latest --photos my-photos --epochs 5 --learning_rate 5e-4"})
    photo_val_fraction: float = field(default=0.15, metadata={"help": "photos held out for validation, stratified"})
    photo_limit: int | None = field(default=None, metadata={"help": "use only this many photos of each source (quick tries, tests)"})
    precision: str = field(default="auto", metadata={"help": "float32, mixed_bfloat16, or auto: mixed_bfloat16 where the CPU has native bfloat16 (AVX512_BF16/AMX) and a few timed steps say it is faster, else float32. model.keras is float32 either way"})
    val_size: int = field(default=6000, metadata={"help": "validation images held out of the 60,000 (stratified)"})
    patience: int = field(default=10, metadata={"help": "early stopping: epochs without val_accuracy gain"})
    distribute: str = field(default="none", metadata={"help": "none; mirrored: every GPU of this machine; multi_worker: the machines in TF_CONFIG, each running this same command (docs/distributed.md)"})
    max_minutes: float | None = field(default=None, metadata={"help": "stop starting new epochs after this wall time"})
    seed: int = 0
    train_limit: int | None = field(default=None, metadata={"help": "use only this many training images (quick tries, tests)"})
    data_dir: str | None = field(default=None, metadata={"help": "Fashion-MNIST directory (default: $FASHION_MNIST_DIR, /usr/share/datasets/fashion-mnist, ~/.keras/datasets/fashion-mnist)"})
    out_dir: str = field(default="runs", metadata={"help": "parent of run directories"})
    name: str | None = field(default=None, metadata={"help": "run directory name (default: <model>-<timestamp>)"})

    def photo_holdout_list(self) -> list[str]:
        return [name.strip() for name in self.photo_holdout.split(",") if name.strip()]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return config_from_dict(cls, data)


def config_from_dict(config_cls, data: dict):
    """A config from a dict (e.g. a saved JSON), refusing unknown fields."""
    unknown = set(data) - {f.name for f in dataclasses.fields(config_cls)}
    if unknown:
        raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
    return config_cls(**data)


def _base_type(annotation: str):
    """'int | None' -> int. Annotations are strings (from __future__ import annotations)."""
    name = annotation.replace(" ", "").split("|")[0]
    return {"int": int, "float": float, "str": str, "bool": bool}[name]


def add_config_arguments(parser: argparse.ArgumentParser, config_cls=TrainConfig) -> None:
    hints = {f.name: f.type for f in dataclasses.fields(config_cls)}
    for f in dataclasses.fields(config_cls):
        kind = _base_type(hints[f.name])
        help_text = f.metadata.get("help", " ")
        if kind is bool:
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=f"{help_text} (default: {f.default})")
        else:
            parser.add_argument(f"--{f.name}", type=kind, default=argparse.SUPPRESS,
                                help=f"{help_text} (default: {f.default})")


def config_from_args(args: argparse.Namespace, config_cls=TrainConfig) -> TrainConfig:
    """Defaults, then --config FILE, then explicit flags."""
    values: dict = {}
    if getattr(args, "config", None):
        values.update(json.loads(Path(args.config).read_text()))
    for f in dataclasses.fields(config_cls):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return config_from_dict(config_cls, values)

