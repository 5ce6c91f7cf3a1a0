"""`classify --own DIR`: the user's own photos mixed in, on real photos from data/photos/, with the
small trained model from conftest (converted with its embedding output) and the real interpreter.

Without --own nothing changes, byte for byte; with it the results move toward the own classes;
every bad imprint.json is one `error:` line and exit status 11. The imprint's maths and parser
alone are tests/test_imprint.py; webcam's keys tests/test_webcam_own.py; serve tests/test_serve_own.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import cli, imprint
from edge_runtime.classifier import Classifier
from edge_runtime.collect import class_folder
from edge_runtime.imageio import read_model_input
from edge_runtime.photo import photo_to_input

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "data" / "photos"
OWN_CLASSES = ("Sneaker", "Trouser", "Dress", "none")  # each has plenty of phone photos in the set
OWN_EACH, TEST_EACH = 5, 10
SUMMARY = re.compile(r"own photos: (\d+) in (\d+) class(?:es)? from (.+) \(imprinted (\d+) new in (\d+\.\d\d) s\)")


def phone_photos(dataset: str | None = "clothing-dataset-small") -> dict[str, list[Path]]:
    """The set's photos by label, in the CSV's order: the phone photos of clothing-dataset-small,
    or with dataset=None every source's (the catalogue shots have the bags)."""
    by_label: dict[str, list[Path]] = {}
    with open(PHOTOS / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            if dataset is None or row["dataset"] == dataset:
                by_label.setdefault(row["label"], []).append(PHOTOS / row["file"])
    return by_label


def make_own_dir(folder: Path, classes=OWN_CLASSES, each: int = OWN_EACH) -> Path:
    """folder/<class folder>/*.jpg: the first `each` phone photos of each class (any source's for a
    class the phone photos lack), as --collect lays them out."""
    photos = {**phone_photos(None), **phone_photos()}
    for label in classes:
        (folder / class_folder(label)).mkdir(parents=True)
        for path in photos[label][:each]:
            shutil.copy(path, folder / class_folder(label) / path.name)
    return folder


@pytest.fixture(scope="module")
def test_photos(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Other phone photos of the own classes (not `none`), in one folder; and each one's label."""
    folder = tmp_path_factory.mktemp("test-photos")
    truth = {}
    photos = phone_photos()
    for label in OWN_CLASSES[:-1]:
        for path in photos[label][OWN_EACH:OWN_EACH + TEST_EACH]:
            shutil.copy(path, folder / path.name)
            truth[path.name] = label
    return folder, truth


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def true_class_scores(recs: list[dict], truth: dict[str, str]) -> tuple[float, int]:
    """(mean probability of each photo's true class, how many were top-1 right), from --top_k 10 records."""
    scores, right = [], 0
    for r in recs:
        label = truth[Path(r["path"]).name]
        scores.append(next(p["score"] for p in r["top_k"] if p["label"] == label))
        right += r["label"] == label
    return float(np.mean(scores)), right


def test_own_photos_move_results_toward_their_classes_and_without_own_nothing_changes(
        tiny_int8_model, test_photos, tmp_path):
    folder, truth = test_photos
    own = make_own_dir(tmp_path / "own")
    base = ["classify", "--json", "--top_k", "10", "--model", str(tiny_int8_model), str(folder)]

    before = run_cli(*base)
    first = run_cli(*base, "--own", str(own))
    again = run_cli(*base, "--own", str(own))
    after = run_cli(*base)

    for r in (before, first, again, after):
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    # Without --own: byte for byte what it was, before and after an imprint was made, and nothing on stderr.
    assert after.stdout == before.stdout and before.stderr == after.stderr == ""
    assert all("own_photos" not in r for r in records(before.stdout))

    n = len(OWN_CLASSES) * OWN_EACH
    stderr = first.stderr.splitlines()
    assert len(stderr) == 1, stderr
    match = SUMMARY.fullmatch(stderr[0])
    assert match and match.group(1, 2, 3, 4) == (str(n), str(len(OWN_CLASSES)), str(own), str(n)), stderr[0]
    # The second run embeds nothing: every photo's embedding is in imprint.json, by its SHA-256.
    match = SUMMARY.fullmatch(again.stderr.strip())
    assert match and match.group(1, 4) == (str(n), "0"), again.stderr
    for a, b in zip(records(again.stdout), records(first.stdout)):  # the cached embeddings (5 decimals)
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-3)

    with_own = records(first.stdout)
    assert {r["own_photos"] for r in with_own} == {n} and len(with_own) == len(truth)
    (mean_before, right_before), (mean_after, right_after) = (
        true_class_scores(records(before.stdout), truth), true_class_scores(with_own, truth))
    assert mean_after > mean_before + 0.05, (mean_before, mean_after)
    assert right_after > right_before, (right_before, right_after)

    # imprint.json: this model's, each photo by its file and SHA-256.
    clf = Classifier(tiny_int8_model)
    sha, photos = imprint.parse((own / imprint.IMPRINT_FILE).read_bytes(), "imprint.json", clf.labels,
                                clf.embedding.shape[-1])
    assert sha == clf.metadata["flatbuffer_sha256"] and len(photos) == n
    for p in photos:
        assert hashlib.sha256((own / p.file).read_bytes()).hexdigest() == p.sha256


def test_without_an_imprint_the_classifier_gives_exactly_the_models_outputs(tiny_int8_model, test_photos, tmp_path):
    folder, _ = test_photos
    clf = Classifier(tiny_int8_model)
    inputs = [read_model_input(p, photo_to_input, clf.input_size) for p in sorted(folder.iterdir())[:6]]
    model = [clf.predict(x)[0] for x in inputs]
    assert clf.own is None
    for x, p in zip(inputs, model):
        np.testing.assert_array_equal(clf.classify_input(x).probabilities, p)
    # An empty own folder mixes nothing in either.
    (tmp_path / "empty").mkdir()
    clf.own = imprint.from_folder(tmp_path / "empty", clf)
    for x, p in zip(inputs, model):
        np.testing.assert_array_equal(clf.classify_input(x).probabilities, p)


def classify_main(capsys, model: Path, own: Path, photo: Path) -> tuple[int, str, str]:
    status = cli.main(["classify", "--model", str(model), "--own", str(own), str(photo)])
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(err: str, *fragments: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def other_models_imprint(tiny_int8_model, own: Path) -> bytes:
    """A valid imprint file of `own`'s photos, but made for another FlatBuffer."""
    clf = Classifier(tiny_int8_model)
    made = imprint.from_folder(own, clf, write=False)
    made.model_sha256 = "0" * 64
    return json.dumps(made.to_json()).encode()


HOSTILE = {  # name: (imprint.json's bytes, what the error says)
    "corrupt": (lambda good: good[:len(good) // 2], "not valid JSON"),
    "over-deep": (lambda good: b"[" * 50_000 + b"]" * 50_000, "nests deeper than"),
    "wrong format": (lambda good: good.replace(b"fashion-edge-imprint/1", b"fashion-edge-imprint/9"),
                     "not an imprint file of this runtime"),
    "not JSON text": (lambda good: b"\x89PNG\r\n\x1a\n\xff\xfe", "not UTF-8"),
    "another model's labels": (lambda good: good.replace(b'"Sneaker"', b'"Sneakers"'), "not this model's"),
    "oversized": (lambda good: good + b" " * imprint.MAX_FILE_BYTES, "an imprint file may have"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_bad_imprint_file_is_one_line_and_exit_status_11(case, tiny_int8_model, test_photos, tmp_path, capsys):
    folder, _ = test_photos
    own = make_own_dir(tmp_path / "own", classes=("Sneaker",), each=2)
    good = json.dumps(imprint.from_folder(own, Classifier(tiny_int8_model), write=False).to_json()).encode()
    damage, says = HOSTILE[case]
    (own / imprint.IMPRINT_FILE).write_bytes(damage(good))
    status, out, err = classify_main(capsys, tiny_int8_model, own, next(folder.iterdir()))
    assert status == 11 and out == ""
    one_error_line(err, str(own / imprint.IMPRINT_FILE), says)


def test_a_stale_imprint_whose_photos_are_gone_is_an_error_and_with_photos_is_made_again(
        tiny_int8_model, test_photos, tmp_path, capsys):
    folder, _ = test_photos
    own = make_own_dir(tmp_path / "own", classes=("Sneaker", "Trouser"), each=2)
    stale = other_models_imprint(tiny_int8_model, own)
    (own / imprint.IMPRINT_FILE).write_bytes(stale)
    status, out, err = classify_main(capsys, tiny_int8_model, own, next(folder.iterdir()))
    lines = err.splitlines()
    assert status == 0 and SUMMARY.fullmatch(lines[0]).group(1, 4) == ("4", "4"), err  # imprinted again
    assert lines[1:] == ["warning: imprint.json: made for another model; imprinting the photos again"]

    for sub in ("Sneaker", "Trouser"):  # the photos are gone: nothing to imprint again from
        shutil.rmtree(own / sub)
    (own / imprint.IMPRINT_FILE).write_bytes(stale)
    status, out, err = classify_main(capsys, tiny_int8_model, own, next(folder.iterdir()))
    assert status == 11 and out == ""
    one_error_line(err, "made for another model", "photos are gone")


def test_the_real_command_exits_11_without_a_traceback(tiny_int8_model, test_photos, tmp_path):
    folder, _ = test_photos
    own = make_own_dir(tmp_path / "own", classes=("none",), each=1)
    (own / imprint.IMPRINT_FILE).write_text('{"format": "fashion-edge-imprint/1", "photos": [')
    r = run_cli("classify", "--model", str(tiny_int8_model), "--own", str(own), str(folder))
    assert r.returncode == 11 and r.stdout == ""
    one_error_line(r.stderr, "imprint.json: not valid JSON", "delete it")


def test_own_folder_problems(tiny_int8_model, test_photos, tmp_path, capsys):
    folder, _ = test_photos
    photo = next(folder.iterdir())
    status, out, err = classify_main(capsys, tiny_int8_model, tmp_path / "missing", photo)
    assert status == 11 and out == ""
    one_error_line(err, "--own", "not a folder")
    (tmp_path / "a-file").write_text("")
    assert classify_main(capsys, tiny_int8_model, tmp_path / "a-file", photo)[0] == 11

    # A folder that names no class, and a photo that doesn't decode: left out, each with a warning.
    own = make_own_dir(tmp_path / "own", classes=("Sneaker",), each=2)
    (own / "Sneakers").mkdir()
    (own / "Sneaker" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    status, out, err = classify_main(capsys, tiny_int8_model, own, photo)
    lines = err.splitlines()
    assert status == 0 and out.strip() and "Traceback" not in err
    assert SUMMARY.fullmatch(lines[0]).group(1, 2) == ("2", "1")
    assert [line.split(":")[0] for line in lines[1:]] == ["warning"] * 2, lines
    assert any("Sneakers/: not a class of this model" in line for line in lines[1:])
    assert any("broken.jpg" in line for line in lines[1:])

    # An empty folder: the model alone, and --json says no own photos were used.
    (tmp_path / "empty").mkdir()
    status = cli.main(["classify", "--json", "--model", str(tiny_int8_model), "--own", str(tmp_path / "empty"),
                       str(photo)])
    out, err = capsys.readouterr()
    assert status == 0 and json.loads(out)["own_photos"] == 0
    assert SUMMARY.fullmatch(err.strip()).group(1, 2, 4) == ("0", "0", "0")
    cli.main(["classify", "--json", "--model", str(tiny_int8_model), str(photo)])
    alone = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in json.loads(out).items() if k != "own_photos"} == alone


def test_naive_and_own_together_are_a_usage_error(tiny_int8_model, test_photos, tmp_path, capsys):
    folder, _ = test_photos
    own = make_own_dir(tmp_path / "own", classes=("Sneaker",), each=1)
    status = cli.main(["classify", "--naive", "--model", str(tiny_int8_model), "--own", str(own),
                       str(next(folder.iterdir()))])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "--naive and --own" in err
