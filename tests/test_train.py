"""Training: config, data split, augmentation, models, and a real (tiny) run's artifacts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from train import augment, trainer
from train.config import TrainConfig, add_config_arguments, config_from_args


# -- config ------------------------------------------------------------------
def test_config_round_trips_through_json():
    config = TrainConfig(model="minivgg", epochs=3, dropout=0.2, flip=False, max_minutes=1.5)
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config


def test_every_field_is_a_flag_and_file_then_flags_override(tmp_path):
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_config_arguments(parser)
    saved = tmp_path / "config.json"
    saved.write_text(TrainConfig(model="cnn", epochs=7, batch_size=64).to_json())
    args = parser.parse_args(["--config", str(saved), "--epochs", "9", "--no-flip", "--width", "16"])
    config = config_from_args(args)
    assert (config.model, config.epochs, config.batch_size, config.flip, config.width) == ("cnn", 9, 64, False, 16)


def test_unknown_config_field_is_refused():
    with pytest.raises(ValueError, match="unknown config fields: colour"):
        TrainConfig.from_dict({"colour": "red"})


# -- data --------------------------------------------------------------------
def test_stratified_split_is_balanced_disjoint_and_seeded(fashion):
    x, y = fashion.train_images, fashion.train_labels
    a = trainer.stratified_split(x, y, 6000, seed=1)
    b = trainer.stratified_split(x, y, 6000, seed=1)
    c = trainer.stratified_split(x, y, 6000, seed=2)
    assert np.bincount(a.val_y).tolist() == [600] * 10
    assert len(a.train_x) == 54000
    assert np.array_equal(a.val_x, b.val_x) and np.array_equal(a.train_y, b.train_y)
    assert not np.array_equal(a.val_x, c.val_x)
    # no validation image is also a training image (compare raw bytes)
    train_set = {img.tobytes() for img in a.train_x[:20000]}
    assert not any(img.tobytes() in train_set for img in a.val_x[:500])


# -- augmentation --------------------------------------------------------------
def test_augmentation_is_deterministic_per_seed_and_keeps_dtype(fashion):
    x = fashion.train_images[:256]
    cfg = augment.AugmentConfig(contrast_prob=0.5, blur_prob=0.5)
    a = augment.augment(x, cfg, trainer.epoch_rng(0, 3))
    b = augment.augment(x, cfg, trainer.epoch_rng(0, 3))
    c = augment.augment(x, cfg, trainer.epoch_rng(0, 4))
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, x)


def test_shift_moves_content_and_fills_black():
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 10:18, 10:18] = 200
    shifted = augment.random_shift(image, 3, np.random.default_rng(0))
    assert shifted.sum() == image.sum()  # the square stays whole inside the frame
    ys, xs = np.nonzero(shifted[0])
    assert abs(ys.min() - 10) <= 3 and abs(xs.min() - 10) <= 3


def test_flip_mirrors_left_right():
    image = np.zeros((64, 28, 28), np.uint8)
    image[:, :, :5] = 255
    flipped = augment.random_flip(image, np.random.default_rng(0))
    mirrored = (flipped[:, :, -5:] == 255).all(axis=(1, 2))
    assert 0 < mirrored.sum() < 64  # some flipped, some not
    assert np.array_equal(flipped[mirrored], image[mirrored][:, :, ::-1])


# -- models --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mlp", "cnn", "minivgg", "edge"])
def test_model_takes_raw_pixels_outputs_probabilities_and_learns(name, fashion):
    import keras

    from train import models
    keras.utils.set_random_seed(0)
    model = models.build(name)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    x = fashion.train_images[:256, :, :, None]  # raw uint8 0..255: models scale themselves
    y = trainer.one_hot(fashion.train_labels[:256])
    probs = model.predict(x[:8], verbose=0)
    assert probs.shape == (8, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    first = float(model.train_on_batch(x, y))
    for _ in range(15):
        last = float(model.train_on_batch(x, y))
    assert last < first * 0.8, f"{name}: loss {first:.3f} -> {last:.3f}"


def test_mac_count_matches_hand_count():
    from train import models
    # mlp: 784*128 + 128*10
    assert models.count_macs(models.mlp()) == 784 * 128 + 128 * 10
    # minivgg: four 3x3 convs (28x28: 1->32, 32->32; 14x14: 32->64, 64->64), dense 3136->512->10
    expected = 784 * 9 * (1 * 32 + 32 * 32) + 196 * 9 * (32 * 64 + 64 * 64) + 3136 * 512 + 512 * 10
    assert models.count_macs(models.minivgg()) == expected
    # edge, width w: 28x28: 1->w/2, w/2->w/2; 14x14: w/2->2w, 2w->2w; dense 7*7*2w -> 3w -> 10
    w, h = 8, 4
    expected = 784 * 9 * (h + h * h) + 196 * 9 * (h * 2 * w + 2 * w * 2 * w) + 49 * 2 * w * 3 * w + 3 * w * 10
    assert models.count_macs(models.edge(width=w)) == expected


def test_edge_model_is_far_smaller_than_minivgg():
    from train import models
    edge, vgg = models.edge(), models.minivgg()
    assert edge.count_params() <= 400_000  # <= 400 KB as int8
    assert edge.count_params() < 0.25 * vgg.count_params()
    # 57% of MiniVGGNet's MACs: the budget is training wall time on a CPU, where plain
    # convs without BatchNorm buy the most accuracy per minute (README, Training).
    assert models.count_macs(edge) < 0.6 * models.count_macs(vgg)


# -- a real run ----------------------------------------------------------------
def test_run_writes_every_artifact(tiny_run):
    for name in ("config.json", "model.keras", "history.json", "metrics.json", "checkpoint.keras",
                 "learning_curves.png", "confusion_matrix.png", "samples.png", "test_predictions.png"):
        assert (tiny_run / name).is_file(), name
    assert os.readlink(tiny_run.parent / "latest") == tiny_run.name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.6  # 2 epochs of 3,000 images: well above chance (0.1)
    assert len(metrics["per_class"]) == 10 and np.array(metrics["confusion_matrix"]).sum() == 10000
    history = json.loads((tiny_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["loss"] < history[0]["loss"]
    assert TrainConfig.from_dict(json.loads((tiny_run / "config.json").read_text())).name == "tiny"


def test_classification_metrics_by_hand():
    m = trainer.classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), n=2)
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["per_class"][1]["precision"] == round(2 / 3, 4) and m["per_class"][0]["recall"] == 0.5


def test_resume_continues_from_the_checkpoint(tmp_path):
    config = TrainConfig(model="mlp", epochs=1, train_limit=1000, val_size=500, photo_dir="", out_dir=str(tmp_path), name="r")
    trainer.run(config, make_reports=False)
    config.epochs = 2
    trainer.run(config, resume=True, make_reports=False)
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_minutes_left_uses_the_median_epoch():
    assert trainer.minutes_left([30.0, 90.0, 30.0], epochs_done=3, epochs=5) == 1.0  # 2 epochs x 30 s
    assert trainer.minutes_left([30.0], epochs_done=5, epochs=5) == 0.0


def test_epoch_lines_say_how_long_is_left(tmp_path, capsys):
    config = TrainConfig(model="mlp", epochs=2, train_limit=1000, val_size=500, photo_dir="", out_dir=str(tmp_path), name="eta")
    trainer.run(config, make_reports=False, publish=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all(" min, " in line and " left" in line for line in lines)
    assert lines[-1].split(" min, ")[1].startswith(" 0.0 left")


def test_refuses_to_overwrite_a_finished_run(tiny_run):
    config = TrainConfig.from_dict(json.loads((tiny_run / "config.json").read_text()))
    with pytest.raises(FileExistsError, match="already holds a trained model"):
        trainer.run(config)


# -- precision ---------------------------------------------------------------
def test_auto_precision_follows_the_cpu_flags_then_the_clock(tmp_path, monkeypatch):
    from train import precision
    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert precision.faster_policy(steps=2, batch=32) in ("float32", "mixed_bfloat16")  # really timed
    monkeypatch.setattr(precision, "faster_policy", lambda: "mixed_bfloat16")  # what the timing said
    assert precision.resolve("auto", str(with_bf16)) == "mixed_bfloat16"
    assert precision.resolve("auto", str(without)) == "float32"  # no bfloat16 instructions: not even timed
    assert precision.resolve("auto", str(tmp_path / "missing")) == "float32"
    assert precision.resolve("float32", str(with_bf16)) == "float32"  # explicit wins
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("float16")


def test_mixed_precision_run_saves_a_float32_model_with_the_same_predictions(tmp_path, fashion):
    import keras
    config = TrainConfig(model="edge", width=8, epochs=1, train_limit=1000, val_size=500, photo_dir="",
                         precision="mixed_bfloat16", out_dir=str(tmp_path), name="bf16")
    run_dir = trainer.run(config, make_reports=False, publish=False)
    assert json.loads((run_dir / "metrics.json").read_text())["precision"] == "mixed_bfloat16"
    saved = keras.models.load_model(run_dir / "model.keras")
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    trained = keras.models.load_model(run_dir / "checkpoint.keras")  # the training-time (bfloat16) model
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in trained.layers}
    images = fashion.test_images[:500, ..., None]
    p_saved, p_trained = saved.predict(images, verbose=0), trained.predict(images, verbose=0)
    # bfloat16 keeps ~3 significant digits: probabilities agree to a few hundredths,
    # labels almost everywhere (they differ only where two classes nearly tie).
    assert np.abs(p_saved - p_trained).max() < 0.05
    assert (p_saved.argmax(1) == p_trained.argmax(1)).mean() > 0.97
