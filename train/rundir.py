"""A training run's directory: what `python -m train` writes and what the
converter, the comparison and the benchmarks read. The file names are
defined here and nowhere else.

    runs/<name>/
      config.json     the TrainConfig (written first)
      model.keras     best weights by validation accuracy (atomic; also after Ctrl-C)
      checkpoint.keras + checkpoint.json   last finished epoch, for --resume
      history.json    per-epoch loss/accuracy, train and validation
      metrics.json    test accuracy/loss, per-class P/R/F1, params, MACs, wall time
      *.png           learning curves, confusion matrix, samples, test montage
    runs/latest -> <name>   (replaced atomically when a run finishes)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LATEST = "latest"  # the symlink in the runs directory that names the newest finished run


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def model(self) -> Path:
        return self.path / "model.keras"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def history(self) -> Path:
        return self.path / "history.json"

    @property
    def checkpoint(self) -> Path:
        """The last finished epoch's model, with optimizer state."""
        return self.path / "checkpoint.keras"

    @property
    def checkpoint_state(self) -> Path:
        """{"epoch": last finished epoch, "best_val_accuracy": ...} beside the checkpoint."""
        return self.path / "checkpoint.json"

    def report(self, name: str) -> Path:
        """One of REPORTS, as a PNG path."""
        if name not in REPORTS:
            raise ValueError(f"unknown report {name!r}; one of {', '.join(REPORTS)}")
        return self.path / f"{name}.png"


REPORTS = ("learning_curves", "confusion_matrix", "samples", "test_predictions", "photo_predictions")
