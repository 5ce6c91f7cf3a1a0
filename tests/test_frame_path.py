"""The frame path: photo_to_input's steps (edge_runtime.photo.photo_steps), the faster
step functions against straightforward reference versions of them, and the profiler
(tools/frame_profile.py).

The faster functions are meant to give the same numbers, not nearly the same: each
test compares with a reference computed the plain way, bit for bit unless it says
otherwise. What they all measured end to end: docs/photos.md ("The frame path").
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge_runtime import photo
from edge_runtime.synthetic import synthetic_frame, synthetic_photos
from tools import frame_profile as fp

FRAME_STEPS = ["to_bgr", "shrink", "lab", "background_colors", "color_distance", "foreground", "clean_mask",
               "main_blobs", "fill_holes", "bounding_box", "gray", "garment_intensity", "stretch", "fit_to_canvas",
               "full_range"]


def blobby_masks(n: int, seed: int = 0):
    """Random masks with blobs, holes, specks and diagonal contacts: smoothed noise, thresholded."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = int(rng.integers(8, 100)), int(rng.integers(8, 100))
        noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.5, 3)))
        yield noise > np.quantile(noise, rng.uniform(0.3, 0.95))


# -- the steps are the pipeline ------------------------------------------------------

def test_photo_steps_name_every_step_and_end_in_photo_to_input():
    frame = synthetic_frame()
    steps = photo.photo_steps(frame)
    times, result = fp.run_steps(steps)
    assert [name for name, _ in times] == FRAME_STEPS
    assert np.array_equal(result, photo.photo_to_input(frame))
    assert result.shape == photo.DEFAULT_SIZE and result.max() == 255


def test_steps_stop_early_when_nothing_stands_out():
    times, result = fp.run_steps(photo.photo_steps(np.full((120, 160, 3), 77, np.uint8)))
    assert [name for name, _ in times] == FRAME_STEPS[:7]
    assert result.shape == photo.DEFAULT_SIZE and result.max() == 0


@pytest.mark.parametrize("name,image", synthetic_photos())
def test_legacy_steps_compose_the_same_pipeline(name, image):
    # The profiler's fallback for a photo.py without photo_steps must run what
    # photo_to_input runs; check_steps raises if the results differ.
    assert fp.check_steps(photo, image, (28, 28))[:2] == ["to_bgr", "shrink"]
    _, legacy = fp.run_steps(fp.legacy_steps(photo, image, (28, 28)))
    assert np.array_equal(legacy, photo.photo_to_input(image))


# -- shrink: halvings, then bilinear the rest of the way ----------------------------------

@pytest.mark.parametrize("shape", [(480, 640), (288, 288), (720, 1280), (1080, 1920), (401, 300), (97, 61),
                                   (255, 129), (256, 256), (3000, 4000), (1, 20000), (20000, 1), (2, 700)])
def test_shrink_gives_the_working_size(shape):
    image = np.zeros((*shape, 3), np.uint8)
    out = photo.shrink(image)
    scale = min(1.0, photo.WORK_SIDE / max(shape))
    assert out.shape == (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)), 3)


def test_a_halving_is_the_rounded_mean_of_two_by_two_pixels():
    image = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = photo.shrink(image)  # 256 -> 128 exactly: one halving of each side, nothing else
    blocks = image.reshape(128, 2, 128, 2, 3).astype(int).sum(axis=(1, 3))
    assert np.array_equal(out, ((blocks + 2) // 4).astype(np.uint8))


@pytest.mark.parametrize("size", [(480, 640), (288, 288), (400, 534)])
def test_shrink_is_close_to_inter_area(size):
    # Tolerance: the two weigh the pixels near a block's edges differently, which
    # moves edges (the garment's outline: up to ~55 levels there) but hardly flat
    # areas: measured 0.6-1.1 grey levels on average on these frames.
    frame = cv2.resize(synthetic_frame(), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    out = photo.shrink(frame).astype(int)
    reference = cv2.resize(frame, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(out - reference).mean() < 1.5
    assert np.median(np.abs(out - reference)) <= 1


def test_shrink_of_a_thin_strip_keeps_a_narrow_mark():
    strip = np.full((1, 20000, 3), 255, np.uint8)
    strip[0, 10000:10160] = 0  # 160 px: about one working pixel
    out = photo.shrink(strip)
    assert out.shape == (1, 128, 3) and out.min() < 100


# -- background colours and the colour distance ------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 7, 64, 1792, 1793])
def test_medians_are_numpys(n):
    samples = np.random.default_rng(n).integers(0, 256, (4, 3, n), dtype=np.uint8)
    expected = np.median(samples, axis=-1).astype(np.float32)
    got = photo.medians(samples.copy())
    assert got.dtype == np.float32 and got.shape == (4, 3)
    assert np.array_equal(got, expected)


def test_background_colors_are_the_medians_of_border_and_corners():
    lab = cv2.cvtColor(photo.shrink(synthetic_frame()), cv2.COLOR_BGR2LAB)
    t = round(96 * photo.CORNER_FRACTION)
    corners = [lab[:t, :t], lab[:t, -t:], lab[-t:, :t], lab[-t:, -t:]]
    expected = [np.median(photo.border_pixels(lab).astype(np.float32), axis=0)]
    expected += [np.median(c.reshape(-1, 3).astype(np.float32), axis=0) for c in corners]
    assert np.array_equal(photo.background_colors(lab), np.stack(expected))


def test_color_distance_is_the_weighted_distance_to_the_nearest_colour():
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    lab[0, :6] = [[0, 0, 0], [255, 255, 255], [0, 255, 0], [255, 0, 255], [128, 128, 128], [1, 254, 3]]  # extremes
    colors = rng.integers(0, 511, (5, 3)) / 2  # medians of uint8: whole or half numbers
    colors[0] = [255, 0, 255]
    weights = np.array([photo.LIGHTNESS_WEIGHT ** 2, 1, 1])
    squared = ((lab[:, :, None, :].astype(np.float64) - colors) ** 2 * weights).sum(axis=3).min(axis=2)
    # exact in float64 (multiples of 1/16), so exact in float32 too; then one correctly rounded sqrt
    expected = np.sqrt(squared.astype(np.float32))
    got = photo.color_distance(lab, colors)
    assert got.dtype == np.float32 and np.array_equal(got, expected)


# -- the mask --------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 10, 1792])
@pytest.mark.parametrize("q", [0.0, 37.5, 50.0, 75.0, 99.0, 100.0])
def test_percentile_is_numpys(n, q):
    values = (np.random.default_rng(n).random(n) * 80).astype(np.float32)
    # numpy has computed this interpolation in float32 or float64 over its versions: 1e-6 relative
    assert photo.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-6, abs=0)


@pytest.mark.parametrize("seed", range(6))
def test_histogram_percentile_is_numpys(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, int(rng.integers(1, 256)) + 1, int(rng.integers(1, 5000))).astype(np.uint8)
    counts = np.bincount(values, minlength=256)
    for q in (0, 1, 50, 98.5, 99, 100):
        assert photo.histogram_percentile(counts, q) == float(np.percentile(values, q))


def test_mask_steps_match_plain_versions():
    for mask in blobby_masks(60):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        expected_blobs = np.isin(labels, 1 + np.flatnonzero(areas >= photo.KEEP_FRACTION * areas.max()))
        blobs = photo.main_blobs(mask)
        assert blobs.dtype == bool and np.array_equal(blobs, expected_blobs)

        padded = np.pad(blobs, 1).astype(np.uint8)
        cv2.floodFill(padded, None, (0, 0), 1)  # 1 also on the garment: reached = outside or garment
        expected_filled = ~(padded[1:-1, 1:-1].astype(bool) & ~blobs)
        filled = photo.fill_holes(blobs)
        assert filled.dtype == bool and np.array_equal(filled, expected_filled)
        assert filled.sum() >= blobs.sum()

        rows, cols = np.flatnonzero(filled.any(axis=1)), np.flatnonzero(filled.any(axis=0))
        assert photo.bounding_box(filled) == (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))

        side = max(3, round(min(mask.shape) * photo.KERNEL_FRACTION) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
        closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
        expected_clean = cv2.morphologyEx(closed, cv2.MORPH_OPEN, kernel).astype(bool)
        assert np.array_equal(photo.clean_mask(mask), expected_clean)


def test_main_blobs_of_an_empty_mask_is_empty():
    empty = np.zeros((20, 30), bool)
    assert not photo.main_blobs(empty).any() and photo.main_blobs(empty).shape == (20, 30)


# -- intensities and the canvas --------------------------------------------------------

def plain_stretch(values, mask, gamma):
    """stretch as float arithmetic on every pixel: the reference for the table version."""
    if not mask.any():
        return np.zeros_like(values)
    top = max(float(np.percentile(values[mask], 99)), 1.0)
    scaled = np.clip(values.astype(np.float32) * (1.0 / top), 0.0, 1.0)
    if gamma != 1.0:
        scaled = scaled ** np.float32(gamma)
    scaled = np.maximum(scaled * 255.0, photo.GARMENT_FLOOR)
    return np.where(mask, np.rint(scaled), 0).astype(np.uint8)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.7])
def test_stretch_table_gives_the_float_arithmetic(gamma):
    rng = np.random.default_rng(int(gamma * 10))
    for mask in blobby_masks(30, seed=int(gamma * 10)):
        values = rng.integers(0, int(rng.integers(1, 256)) + 1, mask.shape).astype(np.uint8)
        crop = (slice(1, None), slice(0, -1))  # a view, as photo_to_input passes the cropped mask
        assert np.array_equal(photo.stretch(values[crop], mask[crop], gamma),
                              plain_stretch(values[crop], mask[crop], gamma))


def test_full_range_is_the_float_arithmetic_for_every_maximum():
    # convertScaleAbs rounds image * (255 / top) in float32 to nearest-even, as np.rint does.
    for top in range(1, 256):
        image = np.arange(top + 1, dtype=np.uint8)[None]  # every value up to the maximum
        expected = image if top == 255 else \
            np.clip(np.rint(image.astype(np.float32) * (255.0 / top)), 0, 255).astype(np.uint8)
        assert np.array_equal(photo.full_range(image), expected), top
    assert photo.full_range(np.zeros((3, 3), np.uint8)).max() == 0


def test_fit_to_canvas_centres_like_the_dataset():
    image = np.full((40, 10), 200, np.uint8)
    canvas = photo.fit_to_canvas(image, (28, 28))
    assert canvas.shape == (28, 28) and canvas.dtype == np.uint8
    columns = np.flatnonzero(canvas.any(axis=0))
    assert (columns[0], columns[-1]) == (11, 17)  # 7 px wide; the odd leftover pixel goes left: 11 | 7 | 10
    assert canvas[:, columns].min() == 200


def test_garment_intensity_inverts_unless_dark():
    gray = np.array([[0, 100, 255]], np.uint8)
    assert photo.garment_intensity(gray, False).tolist() == [[255, 155, 0]]
    assert photo.garment_intensity(gray, True) is gray


# -- the profiler ------------------------------------------------------------------------

def test_frame_profile_times_every_step():
    frame = synthetic_frame()
    result = fp.frame_profile(frame, runs=5, warmup=1)
    assert list(result["steps"]) == FRAME_STEPS
    assert all(us > 0 for us in result["steps"].values())
    assert result["sum_us"] == pytest.approx(sum(result["steps"].values()), abs=0.1)
    assert result["total_us"] > 0 and result["runs"] == 5


def test_frame_profile_alternates_modules():
    other = fp.photo_module((fp.ROOT / "edge_runtime" / "photo.py").read_text(), "copy", [("WORK_SIDE", 64)])
    assert other.WORK_SIDE == 64 and isinstance(other.WORK_SIDE, int) and photo.WORK_SIDE == 128
    result = fp.frame_profile(synthetic_frame(), runs=3, warmup=0, photos={"a": photo, "b": other})
    assert set(result) == {"a", "b"} and list(result["b"]["steps"]) == FRAME_STEPS
    assert other.shrink(synthetic_frame()).shape == (48, 64, 3)


def test_frame_profile_rejects_no_runs():
    with pytest.raises(ValueError):
        fp.frame_profile(synthetic_frame(), runs=0)


def test_camera_frame_crops_to_the_frame_aspect_then_resizes():
    tall = np.zeros((300, 100, 3), np.uint8)
    tall[:, :, 2] = np.arange(300)[:, None] // 2  # red rises down the image
    frame = fp.camera_frame(tall)
    assert frame.shape == (480, 640, 3)
    # 100 wide -> a 100x75 centre crop (rows 112..186), red values 56..93
    assert 55 <= frame[:, :, 2].min() and frame[:, :, 2].max() <= 94
    assert fp.centre_roi(frame).shape == (288, 288, 3)


def test_profile_frames_are_camera_frames_and_their_roi():
    frames = fp.profile_frames()
    assert len(frames) == 2 * (1 + len(fp.CAMERA_PHOTOS))
    for name, frame in frames.items():
        assert frame.shape == ((288, 288, 3) if name.endswith("centre ROI") else (480, 640, 3))


@pytest.mark.parametrize("text", ["WORK_SIDE", "=3", "WORK_SIDE=big", "1x=2"])
def test_bad_settings_are_usage_errors(text):
    import argparse
    with pytest.raises(argparse.ArgumentTypeError):
        fp.parse_setting(text)


def test_a_setting_must_name_a_numeric_constant():
    from edge_runtime.errors import UsageError
    with pytest.raises(UsageError, match="NO_SUCH"):
        fp.photo_module("X = 1\n", "t", [("NO_SUCH", 1.0)])


def test_main_writes_json_and_markdown(tmp_path, capsys):
    assert fp.main(["--runs", "2", "--warmup", "0", "--frames", "synthetic", "--against", "WORKTREE",
                    "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "frame_path.json").read_text())
    assert list(report["frames"]) == ["synthetic", "synthetic, centre ROI"]
    entry = report["frames"]["synthetic"]
    assert entry["identical"] is True and list(entry["profile"]["steps"]) == FRAME_STEPS
    text = (tmp_path / "frame_path.md").read_text()
    assert "| shrink |" in text and "photo_to_input" in text and "Load average" in text
    assert not list(tmp_path.glob(".*partial*"))


def test_main_with_no_matching_frame_is_a_usage_error(tmp_path, capsys):
    assert fp.main(["--frames", "no-such-frame", "--out", str(tmp_path)]) == 2
    assert "no frame's name contains" in capsys.readouterr().err


# -- the accuracy A/B (tools/preprocessing_ab.py) --------------------------------------

def test_mcnemar_verdicts():
    from tools.preprocessing_ab import mcnemar
    assert mcnemar(0, 0)["verdict"] == "within noise"
    assert mcnemar(7, 4) == {"lost": 7, "won": 4, "net": -3, "bound": 6.6, "verdict": "within noise"}
    assert mcnemar(23, 7)["verdict"] == "worse" and mcnemar(2, 12)["verdict"] == "better"


def test_compare_counts_pairs():
    from tools.preprocessing_ab import OOD, compare
    labels = np.array([0, 1, 2, 3, OOD])
    before, after = np.array([0, 1, 0, 0, 5]), np.array([0, 2, 2, 0, 6])
    r = compare(labels, before, after)
    assert (r["photos"], r["all_photos"], r["correct_before"], r["correct_after"]) == (4, 5, 2, 2)
    assert (r["lost"], r["won"], r["flips"]) == (1, 1, 3)
    assert r["top1_before"] == r["top1_after"] == 0.5


@pytest.fixture(scope="module")
def small_photo_set(tmp_path_factory):
    """A copy of the first 24 photos of two data/photos sources, with their labels.csv rows."""
    import csv
    import shutil
    source = fp.PHOTO_DIR
    out = tmp_path_factory.mktemp("photos")
    with open(source / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames
    picked = [r for r in rows if r["dataset"] == "abo"][:24] + [r for r in rows if r["dataset"] == "clothing-dataset"][:24]
    for r in picked:
        (out / r["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / r["file"], out / r["file"])
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(picked)
    return out


def test_preprocessing_ab_of_a_version_with_itself_changes_nothing(small_photo_set, tmp_path):
    from tools import preprocessing_ab
    assert preprocessing_ab.main(["--against", "WORKTREE", "--photo_dir", str(small_photo_set),
                                  "--photos_dir", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "preprocessing_ab.json").read_text())
    assert [r["set"] for r in report["results"]] == ["abo (validation split)", "clothing-dataset (validation split)"]
    for r in report["results"]:
        assert r["identical_inputs"] == r["all_photos"] > 0
        assert (r["lost"], r["won"], r["flips"], r["verdict"]) == (0, 0, 0, "within noise")
    assert "| abo (validation split) |" in (tmp_path / "preprocessing_ab.md").read_text()


def test_preprocessing_ab_sees_a_different_working_size(small_photo_set, tmp_path):
    from tools import preprocessing_ab
    assert preprocessing_ab.main(["--against", "WORKTREE", "--set", "WORK_SIDE=48", "--candidate", "--reference",
                                  "--photo_dir", str(small_photo_set), "--photos_dir", str(tmp_path / "absent"),
                                  "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "preprocessing_ab.json").read_text())
    assert report["against"]["settings"] == {"WORK_SIDE": 48.0} and report["against"]["is_candidate"]
    assert sum(r["identical_inputs"] for r in report["results"]) < sum(r["all_photos"] for r in report["results"])
    assert all("reference" in r for r in report["results"])
    assert "Before: today's photo.py. After: WORKTREE" in (tmp_path / "preprocessing_ab.md").read_text()
