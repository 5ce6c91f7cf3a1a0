"""Which model a command uses and with which `unknown` threshold: --model, $EDGE_MODEL,
models/ (make convert), else the model shipped inside edge_runtime; the threshold is
the model's calibrated one unless a flag or argument says otherwise; and the help
says so in words instead of printing "(default: None)"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_runtime import cli, deployed, doctor
from edge_runtime.classifier import DEFAULT_THRESHOLD, Classifier
from edge_runtime.metadata import embed, flatbuffer_part, read_metadata


def test_precedence_flag_env_cwd_checkout_shipped(tmp_path, monkeypatch):
    def model_at(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        return path

    shipped = model_at(tmp_path / "pkg" / "edge_runtime" / "shipped" / deployed.MODEL_FILENAME)
    monkeypatch.setattr(deployed, "SHIPPED_MODEL", shipped)
    monkeypatch.setattr(deployed, "__file__", str(tmp_path / "pkg" / "edge_runtime" / "deployed.py"))
    work = tmp_path / "work"
    work.mkdir()
    assert deployed.find_model(None, {}, work) == deployed.ModelChoice(shipped, deployed.FROM_SHIPPED)
    checkout = model_at(tmp_path / "pkg" / deployed.MODELS_DIR / deployed.MODEL_FILENAME)
    assert deployed.find_model(None, {}, work) == deployed.ModelChoice(checkout, deployed.FROM_CHECKOUT)
    converted = model_at(work / deployed.MODELS_DIR / deployed.MODEL_FILENAME)
    assert deployed.find_model(None, {}, work) == deployed.ModelChoice(converted, deployed.FROM_CWD)
    env = {deployed.MODEL_ENV_VAR: "/some/where.tflite"}
    assert deployed.find_model(None, env, work) == deployed.ModelChoice(Path("/some/where.tflite"), deployed.FROM_ENV)
    assert deployed.find_model("a.tflite", env, work) == deployed.ModelChoice(Path("a.tflite"), deployed.FROM_FLAG)
    for path in (converted, checkout, shipped):
        path.unlink()
    nowhere = deployed.find_model(None, {}, work)  # the error then names where `make convert` writes
    assert nowhere == deployed.ModelChoice(work / deployed.MODELS_DIR / deployed.MODEL_FILENAME, deployed.FROM_NOWHERE)


def with_threshold(model, tmp_path, threshold):
    """A copy of `model` whose embedded metadata has this unknown_threshold (or none)."""
    meta = read_metadata(model)
    meta.pop("unknown_threshold", None)
    if threshold is not None:
        meta["unknown_threshold"] = threshold
    path = tmp_path / f"t{threshold}.tflite"
    path.write_bytes(embed(flatbuffer_part(model.read_bytes()), meta))
    return path


def test_classifier_defaults_to_the_models_calibrated_threshold(tiny_int8_model, tmp_path):
    calibrated = with_threshold(tiny_int8_model, tmp_path, 0.35)
    assert Classifier(calibrated).threshold == 0.35
    assert Classifier(calibrated, threshold=0.8).threshold == 0.8
    assert Classifier(calibrated, threshold=0).threshold == 0.0  # 0 is a threshold, not "unset"
    assert Classifier(with_threshold(tiny_int8_model, tmp_path, None)).threshold == DEFAULT_THRESHOLD == 0.5


def test_classify_uses_the_same_threshold_as_the_library(tiny_int8_model, tmp_path, capsys):
    calibrated = with_threshold(tiny_int8_model, tmp_path, 0.99)  # nearly everything is unknown
    import cv2
    import numpy as np
    photo = np.full((200, 160, 3), 230, np.uint8)
    cv2.rectangle(photo, (40, 30), (120, 170), (40, 40, 160), -1)
    cv2.imwrite(str(tmp_path / "p.png"), photo)
    assert cli.main(["classify", "--json", "--model", str(calibrated), str(tmp_path / "p.png")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["unknown"] == (record["score"] < 0.99)
    assert record["label"] == ("unknown" if record["score"] < 0.99 else record["top_k"][0]["label"])


def test_info_says_which_model_and_where_it_came_from(tiny_int8_model, tmp_path, monkeypatch, capsys):
    assert cli.main(["info", "--model", str(tiny_int8_model)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == str(tiny_int8_model) and out["source"] == deployed.FROM_FLAG
    assert out["threshold"] == read_metadata(tiny_int8_model).get("unknown_threshold", DEFAULT_THRESHOLD)
    monkeypatch.setenv(deployed.MODEL_ENV_VAR, str(tiny_int8_model))
    assert cli.main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == deployed.FROM_ENV
    monkeypatch.delenv(deployed.MODEL_ENV_VAR)
    (tmp_path / "models").mkdir()
    shutil.copy(tiny_int8_model, tmp_path / "models" / deployed.MODEL_FILENAME)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == deployed.FROM_CWD


def test_doctor_names_the_models_source(tiny_int8_model, tmp_path, monkeypatch):
    monkeypatch.setenv(deployed.MODEL_ENV_VAR, str(tiny_int8_model))
    env = doctor.Environment.current()
    assert env.model_path == tiny_int8_model and env.model_source == deployed.FROM_ENV
    row = next(c for c in doctor.run_checks(env) if c.name == "model")
    assert row.status == doctor.OK and f"from {deployed.FROM_ENV}" in row.detail


@pytest.mark.parametrize("command", ["classify", "webcam", "serve", "info", "doctor", "bench"])
def test_help_never_prints_default_none(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    assert text.count("(default:") == text.count("default:")  # each default is said once, in one form
    if command in ("classify", "webcam", "serve"):
        assert "calibrated" in text and str(DEFAULT_THRESHOLD) in text  # --threshold: the model's own


def test_info_into_a_reader_that_leaves_early_is_no_traceback(tiny_int8_model):
    import os
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1); from edge_runtime.cli import main; "
                             f"from edge_runtime.process import exit_with; exit_with(main(['info', '--model', "
                             f"{str(tiny_int8_model)!r}]))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # `info | head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err, err
