"""Faults lose nothing: training or conversion killed with SIGKILL leaves the
deployed model and the last finished artifacts loadable and unchanged, and
training resumes from its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (status {proc.returncode}) before the condition held")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.2)


def visible_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not p.name.startswith(".")}


def test_conversion_killed_midway_leaves_deployed_model_untouched(tiny_run, tiny_int8_model, tmp_path):
    deployed = tmp_path / tiny_int8_model.name
    deployed.write_bytes(tiny_int8_model.read_bytes())
    before = deployed.read_bytes()
    proc = start(["-m", "convert", "--run_dir", str(tiny_run), "--out_dir", str(tmp_path), "--latency_runs", "5"])
    # Kill once it has started writing variants into its staging directory.
    wait_for(lambda: any(p.is_dir() and any(p.iterdir()) for p in tmp_path.glob(".staging-*")), 300, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert deployed.read_bytes() == before
    assert visible_files(tmp_path) == {deployed.name}  # nothing a later step could take for a finished model
    # The next conversion clears the dead one's staging directory.
    from convert.pipeline import _remove_stale_staging
    _remove_stale_staging(tmp_path)
    assert not list(tmp_path.glob(".staging-*"))


def test_training_killed_keeps_best_checkpoint_and_resumes(tmp_path):
    args = ["-m", "train", "--model", "mlp", "--train_limit", "2000", "--val_size", "500", "--photo_dir", "",
            "--out_dir", str(tmp_path), "--name", "k", "--no_reports"]
    proc = start([*args, "--epochs", "60"])
    run_dir = tmp_path / "k"
    wait_for(lambda: (run_dir / "checkpoint.json").exists(), 300, proc)
    time.sleep(1.5)  # somewhere inside a later epoch, possibly mid-save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "latest").exists()  # an unfinished run is never published
    import keras
    model = keras.models.load_model(run_dir / "model.keras")  # complete, loadable
    assert model.output_shape == (None, 10)
    assert {"model.keras", "checkpoint.keras", "checkpoint.json", "config.json", "history.json"} <= visible_files(run_dir)

    import json
    done = json.loads((run_dir / "checkpoint.json").read_text())["epoch"] + 1
    result = subprocess.run([sys.executable, *args, "--epochs", str(done + 1), "--resume"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming after epoch {done}" in result.stdout
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, done + 2))
    assert os.readlink(tmp_path / "latest") == "k"


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train", "--out_dir", str(tmp_path), "--name", "none", "--resume"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "has no checkpoint to resume from" in result.stderr and "Traceback" not in result.stderr
