"""Training with --distribute: TF_CONFIG checked before TensorFlow starts, how a
batch is shared between replicas, and real two-worker runs on 127.0.0.1
(MultiWorkerMirroredStrategy over gRPC, as between machines). Every process
is bounded by a timeout; a worker left behind is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from train import distribute
from edge_runtime.errors import UsageError
from train.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 300  # s; a two-worker tiny run takes about 30 s here


def tf_config(ports: list[int], index: int) -> str:
    """Worker `index`'s TF_CONFIG on 127.0.0.1:ports; an index past the end too (a mistake to test)."""
    config = json.loads(distribute.tf_configs([f"127.0.0.1:{p}" for p in ports])[0])
    config["task"]["index"] = index
    return json.dumps(config)


def start_workers(args: list[str], tmp_path: Path, n: int = 2) -> list[subprocess.Popen]:
    """n `python -m train` processes forming one cluster; scratch files in tmp_path/scratch."""
    (tmp_path / "scratch").mkdir(exist_ok=True)
    procs = []
    for i, config in enumerate(distribute.local_tf_configs(n)):
        env = {**os.environ, "TF_CONFIG": config, "TMPDIR": str(tmp_path / "scratch"),
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
    assert distribute.cluster_from_tf_config(tf_config([1, 2], 1)) == distribute.Cluster("worker", 1, 2, "127.0.0.1:2")
    with_chief = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}})
    assert distribute.cluster_from_tf_config(with_chief) == distribute.Cluster("worker", 0, 2, "b:1")
    for text, words in [(None, "needs TF_CONFIG"), ("", "needs TF_CONFIG"), ("{not json", "not a cluster"),
                        ('{"cluster": {}}', "not a cluster"), ('["a"]', "not a cluster"),
                        (tf_config([1, 2], 2), "index 2 is outside"),
                        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "'ps'"),
                        ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', "one chief")]:
        with pytest.raises(ConfigError, match=words):
            distribute.cluster_from_tf_config(text)


def test_local_tf_configs_describe_one_cluster_on_this_machine():
    configs = [json.loads(c) for c in distribute.local_tf_configs(3)]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    addresses = configs[0]["cluster"]["worker"]
    assert all(c["cluster"]["worker"] == addresses for c in configs) and len(set(addresses)) == 3
    assert all(a.startswith("127.0.0.1:") for a in addresses)


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


def test_a_taken_port_ends_train_with_one_line(tmp_path):
    import socket as socket_module
    with socket_module.create_server(("127.0.0.1", 0)) as taken:
        config = tf_config([taken.getsockname()[1], 1], 0)
        result = subprocess.run([sys.executable, "-m", "train", "--distribute", "multi_worker", "--out_dir", str(tmp_path)],
                                cwd=ROOT, env={**os.environ, "TF_CONFIG": config}, capture_output=True, text=True,
                                timeout=WORKER_TIMEOUT)
    assert result.returncode == 2, result.stderr
    assert "cannot join the cluster at 127.0.0.1:" in result.stderr and "Traceback" not in result.stderr


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
    assert not list((tmp_path / "scratch").glob("two-worker-*"))  # the worker's scratch copy is gone


def test_a_lost_chief_ends_the_worker_with_one_line_and_a_resumable_run(tmp_path):
    out = tmp_path / "runs"
    procs = start_workers([*TINY, "--epochs", "50", "--out_dir", str(out)], tmp_path)
    deadline = time.monotonic() + WORKER_TIMEOUT
    try:
        # epoch 2's line is printed after epoch 1's checkpoint was written
        while "epoch   2/" not in (tmp_path / "worker0.log").read_text():
            assert time.monotonic() < deadline and procs[0].poll() is None, (tmp_path / "worker0.log").read_text()
            time.sleep(0.5)
        procs[0].send_signal(signal.SIGKILL)
        status = finish(procs[1:])[0]
    finally:
        finish(procs, timeout=5)
    log = (tmp_path / "worker1.log").read_text()
    assert status == 10, log
    error = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "lost contact with another worker" in error[0] and "--resume" in error[0]
    assert "Traceback" not in log
    assert json.loads((out / "two" / "checkpoint.json").read_text())["epoch"] >= 0
    # the worker removed its scratch copy (Keras may leave an empty assets folder of a save it was in)
    assert not list((tmp_path / "scratch").glob("two-worker-*"))


# -- distributed tuning (Keras Tuner's chief and workers) -----------------------------
def test_tuning_role_comes_from_keras_tuners_variables():
    from tools.tune import Role, role_from_env
    assert role_from_env({}) == Role() and not Role().distributed
    chief = role_from_env({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "10.0.0.5",
                           "KERASTUNER_ORACLE_PORT": "8000"})
    assert chief.chief and chief.oracle == "10.0.0.5:8000"
    worker = role_from_env({"KERASTUNER_TUNER_ID": "tuner1", "KERASTUNER_ORACLE_IP": "10.0.0.5",
                            "KERASTUNER_ORACLE_PORT": "8000"})
    assert worker.distributed and not worker.chief and worker.tuner_id == "tuner1"
    with pytest.raises(UsageError, match="KERASTUNER_ORACLE_PORT not set"):
        role_from_env({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "10.0.0.5"})
    for port in ("http", "0", "70000"):
        with pytest.raises(UsageError, match="port number"):
            role_from_env({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "h", "KERASTUNER_ORACLE_PORT": port})


def test_distributed_tuning_needs_a_shared_search_name(monkeypatch, tmp_path, capsys):
    from tools import tune
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    assert tune.main(["--out_dir", str(tmp_path)]) == 2
    assert "needs --name" in capsys.readouterr().err


def test_a_chief_whose_port_is_taken_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    import socket as socket_module

    from tools import tune
    with socket_module.create_server(("127.0.0.1", 0)) as taken:
        monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
        monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
        monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(taken.getsockname()[1]))
        assert tune.main(["--out_dir", str(tmp_path), "--name", "s"]) == 2
    assert "the chief cannot listen on 127.0.0.1:" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_chief_and_two_workers_finish_a_search_and_agree_on_the_best(tmp_path):
    """Keras Tuner's distributed mode on 127.0.0.1: Hyperband with max_epochs 3 is
    6 trials; the chief hands them out and writes best_config.json."""
    from tools.tune import best_config_values
    from train.config import TrainConfig
    port = distribute.free_local_addresses(1)[0].rsplit(":", 1)[1]
    out = tmp_path / "runs"
    procs = []
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": port, "TF_CPP_MIN_LOG_LEVEL": "2"}
        log = open(tmp_path / f"{tuner_id}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "tools.tune", "--max_epochs", "3", "--train_limit", "600",
                                       "--val_size", "500", "--out_dir", str(out), "--name", "search"],
                                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    statuses = finish(procs)
    logs = {t: (tmp_path / f"{t}.log").read_text() for t in ("chief", "tuner0", "tuner1")}
    assert statuses == [0, 0, 0], logs
    search = out / "search"
    ran = {t: json.loads((search / f"trials-{t}.json").read_text()) for t in ("tuner0", "tuner1")}
    assert ran["tuner0"] and ran["tuner1"], "both workers ran trials"
    ids = [t["trial"] for trials in ran.values() for t in trials]
    assert len(ids) == len(set(ids)) == 6  # every trial ran once, on one worker
    best_score = max(t["score"] for trials in ran.values() for t in trials)
    best_values = [best_config_values(t["values"]) for trials in ran.values() for t in trials if t["score"] == best_score]
    config = TrainConfig.from_dict(json.loads((search / "best_config.json").read_text()))
    assert {k: getattr(config, k) for k in best_values[0]} in best_values
    assert config.train_limit is None and config.name is None
    for t in ("tuner0", "tuner1"):
        assert "the chief writes" in logs[t] and "Traceback" not in logs[t]


def test_step_estimate_adds_the_ring_all_reduce_to_the_per_machine_compute():
    from tools.distributed_steps import estimate
    compute = {128: 0.040, 64: 0.025, 32: 0.017}
    # 2 machines: each sends and receives 2(2-1)/2 = 1x the gradient; 1.4 MB at 1 Gbit/s is 11.2 ms
    assert estimate(compute, 1_400_000, 2, 1.0) == pytest.approx(0.025 + 0.0112)
    # 4 machines: 1.5x the gradient over each link, compute of 32 images
    assert estimate(compute, 1_400_000, 4, 10.0) == pytest.approx(0.017 + 0.00168)


def test_a_distributed_epoch_has_full_batches_only():
    assert distribute.steps_per_epoch(1000, 128, distributed=False) == 8  # the last batch has 104
    assert distribute.steps_per_epoch(1000, 128, distributed=True) == 7
    with pytest.raises(ConfigError, match="fewer than one batch"):
        distribute.steps_per_epoch(100, 128, distributed=True)
