"""Training with --distribute: TF_CONFIG checked before TensorFlow starts, how a
batch is shared between replicas, and real two-worker runs on 127.0.0.1
(MultiWorkerMirroredStrategy over gRPC, as between machines). Every process
is bounded by a timeout; a worker left behind is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from train import distribute
from train.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 300  # s; a two-worker tiny run takes about 30 s here


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(args: list[str], tmp_path: Path, n: int = 2) -> list[subprocess.Popen]:
    """n `python -m train` processes forming one cluster; scratch files in tmp_path/scratch."""
    ports = free_ports(n)
    (tmp_path / "scratch").mkdir(exist_ok=True)
    procs = []
    for i in range(n):
        env = {**os.environ, "TF_CONFIG": tf_config(ports, i), "TMPDIR": str(tmp_path / "scratch"),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        log = open(tmp_path / f"worker{i}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "train", "--distribute", "multi_worker", *args],
                                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = WORKER_TIMEOUT) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


TINY = ["--model", "cnn", "--epochs", "1", "--train_limit", "3000", "--val_size", "1000",
        "--photo_limit", "100", "--photo_copies", "2", "--no_reports", "--name", "two"]


# -- pure --------------------------------------------------------------------------
def test_tf_config_is_read_and_mistakes_are_named():
    assert distribute.cluster_from_tf_config(tf_config([1, 2], 1)) == distribute.Cluster("worker", 1, 2)
    with_chief = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}})
    assert distribute.cluster_from_tf_config(with_chief) == distribute.Cluster("worker", 0, 2)
    for text, words in [(None, "needs TF_CONFIG"), ("", "needs TF_CONFIG"), ("{not json", "not a cluster"),
                        ('{"cluster": {}}', "not a cluster"), ('["a"]', "not a cluster"),
                        (tf_config([1, 2], 2), "index 2 is outside"),
                        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "'ps'"),
                        ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', "one chief")]:
        with pytest.raises(ConfigError, match=words):
            distribute.cluster_from_tf_config(text)


def test_check_refuses_unknown_strategies_and_needs_tf_config_only_for_multi_worker():
    distribute.check("none", {})
    distribute.check("mirrored", {})
    with pytest.raises(ConfigError, match="one of none, mirrored, multi_worker"):
        distribute.check("horovod", {})
    with pytest.raises(ConfigError, match="needs TF_CONFIG"):
        distribute.check("multi_worker", {})


@pytest.mark.parametrize("rows,replicas", [(128, 2), (128, 3), (5, 4), (1, 1)])
def test_replicas_share_every_row_of_a_batch_once(rows, replicas):
    parts = [distribute.replica_rows(rows, r, replicas) for r in range(replicas)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(rows))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_bad_tf_config_ends_train_with_one_line_before_tensorflow_loads(tmp_path):
    env = {**os.environ, "TF_CONFIG": "{broken"}
    result = subprocess.run([sys.executable, "-m", "train", "--distribute", "multi_worker", "--out_dir", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "TF_CONFIG is not a cluster and task" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


# -- real strategies -----------------------------------------------------------
def test_mirrored_strategy_trains_on_this_machine(tmp_path):
    """MirroredStrategy over this machine's devices (the CPU here; every GPU elsewhere)."""
    from train import trainer
    from train.config import TrainConfig
    run_dir = trainer.run(TrainConfig(model="mlp", epochs=1, train_limit=2000, val_size=500, photo_dir="",
                                      distribute="mirrored", out_dir=str(tmp_path), name="m"), make_reports=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["distribute"] == {"strategy": "mirrored", "replicas": 1}
    assert metrics["test_accuracy"] > 0.4  # one epoch of 2,000 images; chance is 0.1


def test_two_workers_train_one_model_and_only_the_chief_writes(tmp_path):
    out = tmp_path / "runs"
    statuses = finish(start_workers([*TINY, "--out_dir", str(out)], tmp_path))
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert statuses == [0, 0], logs
    # One model: gradients are summed every step, so both report the same epoch
    # (loss, accuracy, validation) to the printed digits; seconds may differ.
    epoch_lines = [[line.split("lr")[0] for line in log.splitlines() if line.startswith("epoch ")] for log in logs]
    assert len(epoch_lines[0]) == 1 and epoch_lines[0] == epoch_lines[1]
    assert "waiting for the chief to write" in logs[1] and "Traceback" not in logs[0] + logs[1]
    assert sorted(p.name for p in out.iterdir()) == ["latest", "two"]
    metrics = json.loads((out / "two" / "metrics.json").read_text())
    assert metrics["distribute"] == {"strategy": "multi_worker", "replicas": 2}
    assert metrics["test_accuracy"] > 0.5  # one epoch of 3,000 images; chance is 0.1
    assert [h["epoch"] for h in json.loads((out / "two" / "history.json").read_text())] == [1]
    assert not any((tmp_path / "scratch").iterdir())  # the worker's scratch copy is gone


def test_a_lost_worker_ends_the_chief_with_one_line_and_a_resumable_run(tmp_path):
    out = tmp_path / "runs"
    args = [*TINY, "--epochs", "50", "--out_dir", str(out)]
    procs = start_workers(args, tmp_path)
    deadline = time.monotonic() + WORKER_TIMEOUT
    try:
        while "epoch   1/" not in (tmp_path / "worker0.log").read_text():
            assert time.monotonic() < deadline and procs[0].poll() is None, (tmp_path / "worker0.log").read_text()
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        status = finish(procs[:1])[0]
    finally:
        finish(procs, timeout=5)
    log = (tmp_path / "worker0.log").read_text()
    assert status == 10, log
    error = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "lost contact with another worker" in error[0] and "--resume" in error[0]
    assert "Traceback" not in log
    assert (out / "two" / "checkpoint.keras").is_file()
