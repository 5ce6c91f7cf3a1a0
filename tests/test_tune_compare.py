"""Smoke tests for make tune and make compare on tiny budgets: they run the real
tools end to end and leave files `make train` and people can use."""

from __future__ import annotations

import json

import pytest

from tools import compare, tune
from train.config import TrainConfig


def test_tune_writes_a_config_train_reads(tmp_path):
    status = tune.main(["--max_epochs", "2", "--train_limit", "500", "--val_size", "500", "--out_dir", str(tmp_path)])
    assert status == 0
    (best,) = tmp_path.glob("tune-*/best_config.json")
    config = TrainConfig.from_dict(json.loads(best.read_text()))
    assert config.model == "edge" and config.width in tune.SEARCH_SPACE["width"]
    assert 0.1 <= config.dropout <= 0.5 and 1e-3 <= config.learning_rate <= 1e-2
    assert config.train_limit is None  # the search slice is not carried into real training


def test_compare_trains_converts_and_tabulates(tmp_path):
    # cnn gets its own epoch budget (how slower models get the same wall time).
    status = compare.main(["--models", "mlp,cnn", "--epochs", "1", "--model_epochs", "cnn=2", "--train_limit", "1000", "--photo_dir", "",
                           "--val_size", "500", "--out_dir", str(tmp_path / "runs"),
                           "--bench_dir", str(tmp_path / "bench")])
    assert status == 0
    result = json.loads((tmp_path / "bench" / "compare.json").read_text())
    assert [r["model"] for r in result["models"]] == ["mlp", "cnn"]
    assert [(r["config"]["epochs"], r["epochs_run"]) for r in result["models"]] == [(1, 1), (2, 2)]
    assert "epoch budgets mlp 1, cnn 2" in (tmp_path / "bench" / "compare.md").read_text()
    for r in result["models"]:
        assert 0.5 < r["test_accuracy"] <= 1 and 0.5 < r["int8_accuracy"] <= 1
        assert r["int8_size_bytes"] > 0 and r["parameters"] > 0
    assert "| mlp |" in (tmp_path / "bench" / "compare.md").read_text()
    assert not (tmp_path / "runs" / "latest").exists()  # comparison runs never replace the user's latest run
    assert (tmp_path / "bench" / "compare.png").stat().st_size > 0
    # Re-running one model replaces its row and keeps the others.
    assert compare.main(["--models", "mlp", "--epochs", "1", "--train_limit", "1000", "--photo_dir", "", "--val_size", "500",
                         "--out_dir", str(tmp_path / "runs"), "--bench_dir", str(tmp_path / "bench")]) == 0
    again = json.loads((tmp_path / "bench" / "compare.json").read_text())["models"]
    assert [r["model"] for r in again] == ["mlp", "cnn"]
    assert again[0]["run"] != result["models"][0]["run"] and again[1] == result["models"][1]
    # A finished run with the same config can stand in for training again.
    cnn_run = result["models"][1]["run"]
    assert compare.main(["--models", "cnn", "--reuse", cnn_run, "--epochs", "1", "--model_epochs", "cnn=2",
                         "--train_limit", "1000", "--photo_dir", "", "--val_size", "500", "--out_dir", str(tmp_path / "runs"),
                         "--bench_dir", str(tmp_path / "bench")]) == 0
    reused = json.loads((tmp_path / "bench" / "compare.json").read_text())["models"][1]
    assert reused["run"] == cnn_run and reused["test_accuracy"] == result["models"][1]["test_accuracy"]


@pytest.mark.parametrize("model_epochs", ["vgg=20", "cnn=0", "cnn", "cnn=two"])
def test_compare_refuses_a_bad_epoch_budget_before_training(model_epochs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--model_epochs", model_epochs, "--out_dir", str(tmp_path / "runs"),
                      "--bench_dir", str(tmp_path / "bench")])
    assert exit_info.value.code == 2 and "--model_epochs" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_rules_are_read_from_the_rows_and_say_when_kept_rows_differ():
    from dataclasses import asdict
    same = [{"config": asdict(TrainConfig(model=m, epochs=30, patience=8))} for m in ("mlp", "cnn")]
    assert compare.rules(same).startswith("Same split, augmentation and schedule for every model; "
                                          "30 epochs max for every model, patience 8.")
    kept = same + [{"config": asdict(TrainConfig(model="edge", epochs=50, patience=8, label_smoothing=0.0))}]
    text = compare.rules(kept)
    assert "epoch budgets mlp 30, cnn 30, edge 50" in text and "different label_smoothing" in text
