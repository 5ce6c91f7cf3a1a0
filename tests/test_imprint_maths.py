"""The imprinting maths of edge_runtime/imprint.py, on arrays, against figures worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import imprint
from edge_runtime.imprint import MixSettings, mix, normalize, prototypes


def test_normalize_scales_rows_to_unit_length_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalize(x), [[0.6, 0.8], [0.0, 0.0]])


def test_prototype_is_the_normalised_mean_of_normalised_embeddings():
    # Two photos of class 2 of very different lengths count the same: (1,0) and (0,1) after
    # normalising, mean (0.5,0.5), normalised (0.7071,0.7071). Class 10 (= `none` of 10) too.
    emb = np.array([[10.0, 0.0], [0.0, 0.1], [0.0, 5.0]])
    classes, protos = prototypes(emb, np.array([2, 2, 10]), n_classes=10)
    assert classes.tolist() == [2, 10]
    np.testing.assert_allclose(protos, [[0.5 ** 0.5, 0.5 ** 0.5], [0.0, 1.0]], atol=1e-6)


def test_mix_by_hand():
    # One prototype for class 1 at (1,0); the image's embedding is (1,0): cosine 1.
    # q = softmax(10 * [1, 0.5]) = [e^10, e^5] / (e^10 + e^5) = [0.99331, 0.00669]
    p = np.array([[0.7, 0.2, 0.1]], np.float32)
    out = mix(p, np.array([[2.0, 0.0]]), np.array([1]), np.array([[1.0, 0.0]]), MixSettings(0.5, 10.0))
    share = np.exp(5) / (np.exp(10) + np.exp(5))
    np.testing.assert_allclose(out, [[0.7 * share, 0.2 * share + (1 - share), 0.1 * share]], rtol=1e-5)


def test_without_prototypes_the_model_stands_exactly():
    p = np.random.default_rng(0).dirichlet(np.ones(10), size=5).astype(np.float32)
    out = mix(p, np.ones((5, 8)), np.zeros(0, np.int64), np.zeros((0, 8)))
    np.testing.assert_array_equal(out, p)


def test_classes_without_own_photos_are_only_scaled_never_raised():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(10), size=50).astype(np.float32)
    emb = rng.normal(size=(50, 16))
    classes, protos = prototypes(rng.normal(size=(6, 16)), np.array([0, 0, 3, 3, 7, 7]), 10)
    out = mix(p, emb, classes, protos)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)  # no `none` prototype: still sums to 1
    others = [c for c in range(10) if c not in (0, 3, 7)]
    assert (out[:, others] <= p[:, others] + 1e-7).all()
    ratio = out[:, others] / p[:, others]  # one common factor per image: the model's share
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(len(others), 1), rtol=1e-4)


def test_near_a_prototype_its_class_wins_far_from_all_the_model_stands():
    p = np.array([[0.1, 0.8, 0.1]], np.float32)
    classes, protos = prototypes(np.array([[1.0, 0.0, 0.0]]), np.array([2]), 3)
    near = mix(p, np.array([[1.0, 0.05, 0.0]]), classes, protos, MixSettings(0.5, 10.0))
    far = mix(p, np.array([[-1.0, 0.0, 0.2]]), classes, protos, MixSettings(0.5, 10.0))
    assert near.argmax() == 2 and near[0, 2] > 0.99
    assert far.argmax() == 1 and abs(far[0, 1] - 0.8) < 1e-4


def test_a_none_prototype_takes_probability_away_from_every_class():
    p = np.array([[0.6, 0.3, 0.1]], np.float32)
    classes, protos = prototypes(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([3, 0]), 3)  # 3 = none
    out = mix(p, np.array([[0.0, 1.0]]), classes, protos)
    assert out.sum() < 0.05 and out.argmax() == 0  # top score far below any threshold: unknown


@pytest.mark.parametrize("settings", [MixSettings(), MixSettings(0.3, 20.0)])
def test_imprint_object_mixes_like_the_function(settings):
    rng = np.random.default_rng(2)
    labels = [f"c{i}" for i in range(4)]
    own = imprint.Imprint(labels, "sha", settings=settings)
    for i, label in enumerate(["c1", "c1", "c3", "none"]):
        own.add(imprint.Photo(f"{label}/{i}.jpg", label, "0" * 64, rng.random(8).astype(np.float32)))
    assert own.counts() == {"c0": 0, "c1": 2, "c2": 0, "c3": 1, "none": 1}
    p, e = rng.dirichlet(np.ones(4), size=3).astype(np.float32), rng.random((3, 8))
    classes, protos = prototypes(np.stack([x.embedding for x in own.photos]), np.array([1, 1, 3, 4]), 4)
    np.testing.assert_allclose(own.mix(p, e), mix(p, e, classes, protos, settings), rtol=1e-6)
    gone = own.forget("c1")
    assert len(gone) == 2 and own.counts()["c1"] == 0
    assert own.prototypes()[0].tolist() == [3, 4]  # recomputed without c1
