"""`python -m edge_runtime classify`: run for real, as a subprocess and through cli.main,
against the small trained int8 model from conftest (`tiny_int8_model`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime import cli
from edge_runtime.classify import expand_paths, human_line
from edge_runtime.imageio import read_image
from edge_runtime.metadata import read_metadata
from edge_runtime.photo import naive_photo_to_input, photo_to_input

ROOT = Path(__file__).resolve().parents[1]


def garment_photo(seed: int, h: int = 240, w: int = 180) -> np.ndarray:
    """A dark, roughly garment-shaped blob on a light background, different per seed."""
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), rng.integers(190, 250, 3), np.uint8)
    top, bottom = rng.integers(10, 60), rng.integers(h - 60, h - 10)
    left, right = rng.integers(10, 60), rng.integers(w - 60, w - 10)
    color = tuple(int(c) for c in rng.integers(0, 90, 3))
    cv2.rectangle(image, (int(left), int(top)), (int(right), int(bottom)), color, -1)
    return image


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """good/a.png, good/b.jpg, good/sub/c.webp, good/notes.txt, bad/broken.jpg, bad/empty.png."""
    root = tmp_path_factory.mktemp("photos")
    (root / "good" / "sub").mkdir(parents=True)
    (root / "bad").mkdir()
    cv2.imwrite(str(root / "good" / "a.png"), garment_photo(1))
    cv2.imwrite(str(root / "good" / "b.jpg"), garment_photo(2))
    cv2.imwrite(str(root / "good" / "sub" / "c.webp"), garment_photo(3))
    (root / "good" / "notes.txt").write_text("not an image, and not picked up from a directory")
    jpeg = cv2.imencode(".jpg", garment_photo(4))[1].tobytes()
    (root / "bad" / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "bad" / "empty.png").write_bytes(b"")
    return root


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """`python -m edge_runtime ARGS` in a fresh interpreter, as a user would run it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=300)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


# -- as a user runs it ---------------------------------------------------------------

def test_human_output_one_line_per_image(tiny_int8_model, photos):
    labels = read_metadata(tiny_int8_model)["labels"]
    good = photos / "good"
    r = run_cli("classify", "--model", str(tiny_int8_model), str(good / "a.png"), str(good / "b.jpg"))
    check_no_traceback(r.stderr)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    # Nothing on stderr for a run that went well: not even the interpreter's
    # "Created TensorFlow Lite XNNPACK delegate" notice.
    assert r.stderr == ""
    for line, name in zip(lines, ["a.png", "b.jpg"]):
        path, rest = line.split("  ", 1)
        assert path.strip().endswith(name)
        label_and_score = rest.strip().split("  (")[0]  # 'Sneaker 0.97' or 'unknown 0.31'
        label, score = label_and_score.rsplit(" ", 1)
        assert label in labels or label == "unknown"
        assert 0.0 <= float(score) <= 1.0


def test_bad_files_among_good_ones(tiny_int8_model, photos):
    r = run_cli("classify", "--model", str(tiny_int8_model), str(photos / "good" / "a.png"),
                str(photos / "bad" / "broken.jpg"), str(photos / "bad" / "empty.png"),
                str(photos / "missing.jpg"), str(photos / "good" / "b.jpg"))
    check_no_traceback(r.stderr)
    assert r.returncode == 1
    assert [line.split()[0].rsplit("/", 1)[-1] for line in r.stdout.splitlines()] == ["a.png", "b.jpg"]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert "broken.jpg: truncated JPEG" in errors[0]
    assert "empty.png: empty file" in errors[1]
    assert "missing.jpg: no such file" in errors[2]


def test_a_damaged_jpeg_is_classified_with_a_warning_naming_it(tiny_int8_model, photos, tmp_path):
    from test_imageio import jpeg_cut_short_inside
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(jpeg_cut_short_inside(garment_photo(5)))
    r = run_cli("classify", "--json", "--model", str(tiny_int8_model), str(damaged), str(photos / "good" / "a.png"))
    assert r.returncode == 0, r.stderr
    records = json_lines(r.stdout)
    assert [len(rec.get("warnings", [])) for rec in records] == [1, 0]
    assert "label" in records[0] and "premature end of data segment" in records[0]["warnings"][0]
    # On stderr the warning names the file; libjpeg's own nameless line is gone.
    assert r.stderr.splitlines() == [f"warning: {damaged}: Corrupt JPEG data: premature end of data segment"]


def test_no_matching_paths_is_a_usage_error(tiny_int8_model, photos):
    r = run_cli("classify", "--model", str(tiny_int8_model), str(photos / "*.gif"), str(photos / "nothing.jpg"))
    check_no_traceback(r.stderr)
    assert r.returncode == 2
    assert "no image files match" in r.stderr
    assert r.stdout == ""


def test_empty_directory_is_a_usage_error(tiny_int8_model, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("classify", "--model", str(tiny_int8_model), str(tmp_path / "empty"))
    assert r.returncode == 2 and "no image files match" in r.stderr


def test_missing_model_is_reported_without_traceback(photos, tmp_path):
    r = run_cli("classify", "--model", str(tmp_path / "nope.tflite"), str(photos / "good" / "a.png"))
    check_no_traceback(r.stderr)
    assert r.returncode == 4  # ModelError
    assert "nope.tflite" in r.stderr and "not found" in r.stderr


def test_verbose_names_interpreter_and_model(tiny_int8_model, photos):
    r = run_cli("--verbose", "classify", "--model", str(tiny_int8_model), str(photos / "good" / "a.png"))
    assert r.returncode == 0
    assert "interpreter: ai-edge-litert" in r.stderr or "interpreter: tflite-runtime" in r.stderr
    assert str(tiny_int8_model) in r.stderr
    assert len(r.stdout.splitlines()) == 1  # the extra information goes to stderr only


@pytest.mark.parametrize("flag,value", [("--top_k", "0"), ("--threshold", "1.5"), ("--threshold", "x")])
def test_bad_option_values_are_usage_errors(tiny_int8_model, photos, flag, value):
    r = run_cli("classify", "--model", str(tiny_int8_model), flag, value, str(photos / "good" / "a.png"))
    assert r.returncode == 2 and flag in r.stderr
    check_no_traceback(r.stderr)


@pytest.mark.parametrize("command", ["classify", "info", "webcam", "doctor"])
@pytest.mark.parametrize("threads", ["0", "100000"])
def test_threads_out_of_range_are_usage_errors_in_every_command(command, threads, capsys):
    """0 used to blame the model (exit 4) and 100000 crashed the interpreter: now refused by argparse."""
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args([command, "--threads", threads, *(["x.png"] if command == "classify" else [])])
    assert e.value.code == 2 and "--threads" in capsys.readouterr().err


# -- through cli.main ------------------------------------------------------------------

def main(capsys, *args: str) -> tuple[int, str, str]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_json_schema(tiny_int8_model, photos, capsys):
    labels = read_metadata(tiny_int8_model)["labels"]
    threshold = read_metadata(tiny_int8_model).get("unknown_threshold", 0.5)
    status, out, err = main(capsys, "classify", "--json", "--top_k", "4", "--model", str(tiny_int8_model),
                            str(photos / "good"), str(photos / "bad" / "broken.jpg"))
    assert status == 1
    records = json_lines(out)
    assert len(records) == 4  # three good images (directory searched recursively) and one error
    ok = [r for r in records if "error" not in r]
    assert sorted(Path(r["path"]).name for r in ok) == ["a.png", "b.jpg", "c.webp"]
    for r in ok:
        assert set(r) == {"path", "label", "score", "top_k", "unknown", "nothing_found"}
        assert len(r["top_k"]) == 4
        scores = [p["score"] for p in r["top_k"]]
        assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] <= scores[0] <= 1
        assert all(p["label"] == labels[p["index"]] for p in r["top_k"])
        assert r["score"] == scores[0]
        assert r["unknown"] == (r["score"] < threshold or r["nothing_found"])  # the model's calibrated one
        assert r["label"] == ("unknown" if r["unknown"] else r["top_k"][0]["label"])
    (bad,) = [r for r in records if "error" in r]
    assert Path(bad["path"]).name == "broken.jpg"
    assert bad["error"]["type"] == "ImageError" and "truncated" in bad["error"]["message"]
    assert "broken.jpg" in err


@pytest.mark.parametrize("threshold", ["0", "0.3", "0.7", "1"])
def test_threshold_decides_unknown(tiny_int8_model, photos, capsys, threshold):
    status, out, _ = main(capsys, "classify", "--json", "--threshold", threshold, "--model", str(tiny_int8_model),
                          str(photos / "good"))
    assert status == 0
    for r in json_lines(out):
        assert (r["label"] == "unknown") == (r["score"] < float(threshold))
    if threshold == "0":
        assert all(r["label"] != "unknown" for r in json_lines(out))


def test_save_input_writes_what_the_model_saw(tiny_int8_model, photos, tmp_path, capsys):
    seen = tmp_path / "seen"
    status, out, _ = main(capsys, "classify", "--json", "--save_input", str(seen), "--model", str(tiny_int8_model),
                          str(photos / "good"))
    assert status == 0
    for r in json_lines(out):
        saved = Path(r["model_input"])
        assert saved.parent == seen
        model_input = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
        assert model_input.shape == (28, 28) and model_input.dtype == np.uint8
        assert np.array_equal(model_input, photo_to_input(read_image(r["path"])))
        big = cv2.imread(str(saved.with_name(saved.stem + "_x10.png")), cv2.IMREAD_UNCHANGED)
        assert big.shape == (280, 280) and np.array_equal(big[::10, ::10], model_input)


def test_save_input_replaces_files_atomically(tiny_int8_model, photos, tmp_path, capsys):
    """A PNG from an earlier run is replaced by a new file, never rewritten in place: a hard link to
    the old one (as a reader holding it open) keeps the old bytes, and no temporary file is left."""
    seen = tmp_path / "seen"
    seen.mkdir()
    (tmp_path / "earlier.png").write_bytes(b"an earlier run's file")
    os.link(tmp_path / "earlier.png", seen / "a.png")
    status, _, _ = main(capsys, "classify", "--save_input", str(seen), "--model", str(tiny_int8_model),
                        str(photos / "good" / "a.png"))
    assert status == 0
    assert (tmp_path / "earlier.png").read_bytes() == b"an earlier run's file"
    assert cv2.imread(str(seen / "a.png"), cv2.IMREAD_UNCHANGED).shape == (28, 28)
    assert sorted(f.name for f in seen.iterdir()) == ["a.png", "a_x10.png"]


def test_save_input_keeps_same_named_files_apart(tiny_int8_model, tmp_path, capsys):
    for d, seed in (("x", 5), ("y", 6)):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "photo.png"), garment_photo(seed))
    status, out, _ = main(capsys, "classify", "--json", "--save_input", str(tmp_path / "seen"),
                          "--model", str(tiny_int8_model), str(tmp_path / "x"), str(tmp_path / "y"))
    assert status == 0
    names = sorted(Path(r["model_input"]).name for r in json_lines(out))
    assert names == ["photo-2.png", "photo.png"]


def test_naive_preprocessing(tiny_int8_model, photos, tmp_path, capsys):
    status, out, _ = main(capsys, "classify", "--json", "--naive", "--save_input", str(tmp_path),
                          "--model", str(tiny_int8_model), str(photos / "good" / "a.png"))
    assert status == 0
    (r,) = json_lines(out)
    saved = cv2.imread(r["model_input"], cv2.IMREAD_UNCHANGED)
    image = read_image(photos / "good" / "a.png")
    assert np.array_equal(saved, naive_photo_to_input(image))
    assert not np.array_equal(saved, photo_to_input(image))


def test_glob_pattern(tiny_int8_model, photos, capsys):
    status, out, _ = main(capsys, "classify", "--model", str(tiny_int8_model), str(photos / "good" / "*.*"))
    # *.* also matches notes.txt: named by a pattern it is tried, and fails.
    assert status == 1
    assert [line.split()[0].rsplit("/", 1)[-1] for line in out.splitlines()] == ["a.png", "b.jpg"]


def test_non_utf8_file_name(tiny_int8_model, tmp_path, capsys):
    directory = os.path.join(os.fsencode(tmp_path), b"fotos")
    os.mkdir(directory)
    ok, png = cv2.imencode(".png", garment_photo(7))
    with open(os.path.join(directory, b"v\xeatement.png"), "wb") as f:  # Latin-1 name, not UTF-8
        f.write(png.tobytes())
    status, out, _ = main(capsys, "classify", "--json", "--model", str(tiny_int8_model), os.fsdecode(directory))
    assert status == 0
    (r,) = json_lines(out)
    assert r["path"].endswith("v\ufffdtement.png")


def test_edge_classify_shorthand(tiny_int8_model, photos, capsys):
    # `edge-classify photo.jpg` (the console script) means `classify photo.jpg`
    status, out, _ = main(capsys, str(photos / "good" / "a.png"), "--model", str(tiny_int8_model))
    assert status == 0 and out.startswith(str(photos / "good" / "a.png"))


# -- pure helpers ------------------------------------------------------------------------

def test_expand_paths(photos, tmp_path):
    good = str(photos / "good")
    files, unmatched = expand_paths([good, good + "/a.png", str(photos / "*.nothing"), str(photos / "missing.jpg")])
    names = [os.path.relpath(f, good) for f in files]
    # directory: images only, sorted, recursive; duplicates dropped; a missing
    # literal path is kept (reading it reports the problem); an empty glob is unmatched
    assert names == ["a.png", "b.jpg", os.path.join("sub", "c.webp"), os.path.join("..", "missing.jpg")]
    assert unmatched == [str(photos / "*.nothing")]


def test_directories_skip_hidden_files(tmp_path):
    for name in ("a.png", "._a.png", ".thumbs/b.png", "c/d.JPG"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    files, _ = expand_paths([str(tmp_path)])
    assert [os.path.relpath(f, tmp_path) for f in files] == ["a.png", os.path.join("c", "d.JPG")]


def test_human_line_format():
    from edge_runtime.classifier import Prediction, Result
    top = [Prediction(7, "Sneaker", 0.97), Prediction(5, "Sandal", 0.02), Prediction(9, "Ankle boot", 0.01)]
    result = Result(top, np.zeros(10, np.float32), np.ones((28, 28), np.uint8), threshold=0.5)
    assert human_line("photo.jpg", result) == "photo.jpg  Sneaker 0.97  (Sandal 0.02, Ankle boot 0.01)"
    result.threshold = 0.98
    assert human_line("photo.jpg", result, 12) == \
        "photo.jpg     unknown 0.97  (Sneaker 0.97, Sandal 0.02, Ankle boot 0.01)"
    assert human_line("a\nb\x1b[2J.jpg", result).startswith("a\\nb\\x1b[2J.jpg  unknown")  # one line, no escape code


def test_error_lines_escape_control_characters_and_json_keeps_the_exact_name(tiny_int8_model, tmp_path, capsys):
    bad = tmp_path / "a\nb\x1b[2J.jpg"  # a newline and the escape code that clears the screen
    bad.write_bytes(b"not a jpeg")
    status, out, err = main(capsys, "classify", "--model", str(tiny_int8_model), str(bad))
    assert status == 1 and err.count("\n") == 1 and "\x1b" not in err
    assert err.startswith("error: ") and "a\\nb\\x1b[2J.jpg" in err
    _, out, _ = main(capsys, "classify", "--json", "--model", str(tiny_int8_model), str(bad))
    (record,) = json_lines(out)
    assert record["path"] == str(bad) and "error" in record


def test_an_image_where_nothing_stands_out_is_unknown_at_any_threshold(tiny_int8_model, tmp_path, capsys):
    """A blank wall or a one-colour image becomes an all-black input; whatever the model says
    about that (v4: Sandal 0.64), there is nothing to classify."""
    cv2.imwrite(str(tmp_path / "wall.png"), np.full((120, 160, 3), (90, 140, 200), np.uint8))
    status, out, _ = main(capsys, "classify", "--json", "--threshold", "0", "--model", str(tiny_int8_model),
                          str(tmp_path / "wall.png"))
    (record,) = json_lines(out)
    assert status == 0 and record["label"] == "unknown" and record["unknown"] is True
    assert record["top_k"][0]["score"] > 0  # the model's own answer is still reported
    assert record["nothing_found"] is True
    _, out, _ = main(capsys, "classify", "--model", str(tiny_int8_model), str(tmp_path / "wall.png"))
    assert out.strip().endswith("wall.png  nothing found (no garment stands out from the background)")
