"""Shared fixtures. The real Fashion-MNIST files are required (CI installs
Debian's dataset-fashion-mnist); tests never download anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Keep TensorFlow's start-up chatter out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def fashion():
    from edge_runtime import dataset
    return dataset.load()


@pytest.fixture(scope="session")
def data_dir():
    from edge_runtime import dataset
    return dataset.find_data_dir()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real training run, tiny: the `cnn` model (no BatchNorm, so a few
    hundred steps already give useful predictions) on 3,000 images and 200 of
    the project's real photos, 2 epochs."""
    from train import trainer
    from train.config import TrainConfig
    out = tmp_path_factory.mktemp("runs")
    config = TrainConfig(model="cnn", epochs=2, train_limit=3000, val_size=1000, photo_limit=200, photo_copies=2,
                         out_dir=str(out), name="tiny")
    return trainer.run(config)


@pytest.fixture(scope="session")
def tiny_models(tiny_run, tmp_path_factory):
    """Every TFLite variant of the tiny run, converted and checked by the real converter."""
    from convert.pipeline import ConvertConfig, run
    out = tmp_path_factory.mktemp("models")
    # Gate opened wide: this fixture provides models; the gate has its own tests.
    report = run(ConvertConfig(run_dir=str(tiny_run), out_dir=str(out), latency_runs=5, max_drop=5, max_class_drop=20))
    return out, report


@pytest.fixture(scope="session")
def tiny_int8_model(tiny_models):
    """Path of a small trained full-int8 .tflite with embedded metadata and a sidecar JSON."""
    out, _ = tiny_models
    return out / "fashion_mnist_int8.tflite"


def pytest_terminal_summary(terminalreporter):
    """After the run: every skipped test's reason, counted, so a developer sees what this
    machine did not check that CI does (CI installs what they need: .ci/run)."""
    from collections import Counter
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons = Counter()
    for report in skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    terminalreporter.write_sep("=", f"{len(skipped)} skipped: what this run did not check")
    for reason, n in reasons.most_common():
        terminalreporter.write_line(f"{n:4d}  {reason}")
    terminalreporter.write_line("`make test-tools` installs what the emulated Pi check and the browser test need "
                                "when apt is usable; CI installs it all (.ci/run).")
