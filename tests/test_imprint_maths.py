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
    # One prototype for class 1 at (1,0); the image's embedding is (2,0): cosine 1.
    # p' = [0.7, 0.2 e^2, 0.1] / (0.7 + 0.2 e^2 + 0.1) = [0.3073, 0.6488, 0.0439] at boost 2
    p = np.array([[0.7, 0.2, 0.1]], np.float32)
    out = mix(p, np.array([[2.0, 0.0]]), np.array([1]), np.array([[1.0, 0.0]]), MixSettings(2.0))
    boosted = 0.2 * np.exp(2.0)
    np.testing.assert_allclose(out, [[0.7, boosted, 0.1]] / (0.8 + boosted), rtol=1e-5)
    np.testing.assert_allclose(out, [[0.3073, 0.6488, 0.0439]], atol=1e-4)


def test_without_prototypes_the_model_stands_exactly():
    p = np.random.default_rng(0).dirichlet(np.ones(10), size=5).astype(np.float32)
    out = mix(p, np.ones((5, 8)), np.zeros(0, np.int64), np.zeros((0, 8)))
    np.testing.assert_array_equal(out, p)


def test_classes_without_own_photos_keep_the_model_s_ranking():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(10), size=50).astype(np.float32)
    emb = rng.normal(size=(50, 16))
    classes, protos = prototypes(rng.normal(size=(6, 16)), np.array([0, 0, 3, 3, 7, 7]), 10)
    out = mix(p, emb, classes, protos)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)  # no `none` prototype: still sums to 1
    others = [c for c in range(10) if c not in (0, 3, 7)]
    ratio = out[:, others] / p[:, others]  # one common factor per image: the normalisation
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(len(others), 1), rtol=1e-4)


def test_near_a_prototype_its_class_gains_far_from_it_the_model_stands():
    p = np.array([[0.1, 0.8, 0.1]], np.float32)
    classes, protos = prototypes(np.array([[1.0, 0.0, 0.0]]), np.array([2]), 3)
    near = mix(p, np.array([[1.0, 0.05, 0.0]]), classes, protos, MixSettings(4.0))
    far = mix(p, np.array([[0.0, 1.0, 0.0]]), classes, protos, MixSettings(4.0))  # cosine 0: no boost
    assert near.argmax() == 2 and near[0, 2] > 0.8
    np.testing.assert_allclose(far, p, atol=1e-6)


def test_a_none_prototype_takes_probability_away_from_every_class():
    # class 0's prototype at (1,0), `none`'s at (0,1); the image is at (0,1): cosine 1 to `none`,
    # 0 to class 0. `none` enters at 1/3: (1/3) e^2 = 2.46 against 0.6 + 0.3 + 0.1; top 0.6 / 3.46.
    p = np.array([[0.6, 0.3, 0.1]], np.float32)
    classes, protos = prototypes(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([3, 0]), 3)  # 3 = none
    out = mix(p, np.array([[0.0, 1.0]]), classes, protos)
    none_share = np.exp(2.0) / 3
    np.testing.assert_allclose(out, p / (1.0 + none_share), rtol=1e-5)
    assert out.max() < 0.25  # below the shipped model's threshold: unknown


@pytest.mark.parametrize("settings", [MixSettings(), MixSettings(5.0)])
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

