"""edge_runtime/imprint.py on its own: an Imprint's photos and the imprint file's parser.

The maths (normalize, prototypes, mix) is tests/test_imprint_maths.py. The commands that use
it (classify/webcam --own) are tests/test_classify_own.py; serve's buttons and forget are
tests/test_serve_own.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime import imprint
from edge_runtime.errors import ImprintError
from edge_runtime.imprint import FORMAT, MAX_FILE_BYTES, MAX_JSON_DEPTH, Photo

LABELS = ["T-shirt/top", "Trouser", "Bag"]
SHA = "ab" * 32


# -- the Imprint's photos ------------------------------------------------------------------


def test_imprint_counts_add_forget_and_prototypes_follow():
    im = imprint.Imprint(list(LABELS), SHA)
    assert im.counts() == {"T-shirt/top": 0, "Trouser": 0, "Bag": 0, "none": 0}
    im.add(Photo("Bag/a.jpg", "Bag", SHA, np.array([1.0, 0.0], np.float32)))
    im.add(Photo("none/b.jpg", "none", "cd" * 32, np.array([0.0, 1.0], np.float32)))
    assert im.counts()["Bag"] == 1 and im.counts()["none"] == 1
    assert im.prototypes()[0].tolist() == [2, 3]
    gone = im.forget("Bag")
    assert [p.file for p in gone] == ["Bag/a.jpg"] and im.prototypes()[0].tolist() == [3]


# -- the file ---------------------------------------------------------------------------


def imprint_doc(n_photos: int = 2, size: int = 4) -> dict:
    return {"format": FORMAT, "model_sha256": SHA, "labels": LABELS, "embedding_size": size,
            "settings": {"boost": 2.0},
            "photos": [{"file": f"Bag/{i}.jpg", "label": "Bag", "sha256": f"{i:064x}",
                        "embedding": [0.25 * i] * size} for i in range(n_photos)]}


def parse(doc_or_bytes, size: int = 4):
    data = doc_or_bytes if isinstance(doc_or_bytes, bytes) else json.dumps(doc_or_bytes).encode()
    return imprint.parse(data, "own/imprint.json", LABELS, size)


def test_parse_reads_back_what_to_json_writes():
    im = imprint.Imprint(list(LABELS), SHA)
    im.add(Photo("Bag/a.jpg", "Bag", "0" * 64, np.array([0.5, -1.25, 3.0], np.float32)))
    im.add(Photo("none/b.jpg", "none", "1" * 64, np.array([0.0, 0.0, 1.0], np.float32)))
    sha, photos = parse(im.to_json(), size=3)
    assert sha == SHA and [(p.file, p.label, p.sha256) for p in photos] == \
        [("Bag/a.jpg", "Bag", "0" * 64), ("none/b.jpg", "none", "1" * 64)]
    np.testing.assert_allclose(photos[0].embedding, [0.5, -1.25, 3.0])


def with_photo(**fields) -> dict:
    doc = imprint_doc()
    doc["photos"][1] = {**doc["photos"][1], **fields}
    return doc


@pytest.mark.parametrize("data, fragment", [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b'{"format": ', "not valid JSON"),
    (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), f"deeper than {MAX_JSON_DEPTH}"),
    (b"[" * 100_000, f"deeper than {MAX_JSON_DEPTH}"),  # never reaches json.loads' recursion
    (b"[]", "not an imprint file"),
    (json.dumps({**imprint_doc(), "format": "fashion-edge-imprint/0"}).encode(), "not an imprint file"),
    (json.dumps({**imprint_doc(), "labels": LABELS[::-1]}).encode(), "not this model's"),
    (json.dumps({**imprint_doc(), "photos": {"a": 1}}).encode(), "not this model's"),
    (json.dumps({**imprint_doc(), "model_sha256": 7}).encode(), "not this model's"),
    (json.dumps({**imprint_doc(), "photos": [7]}).encode(), "photo 0 is not an object"),
    (json.dumps(with_photo(sha256="abc")).encode(), "photo 1 has no file name or SHA-256"),
    (json.dumps(with_photo(file=None)).encode(), "photo 1 has no file name or SHA-256"),
    (json.dumps(with_photo(label="../../etc")).encode(), "photo 1 has label"),
    (json.dumps(with_photo(embedding=[1.0, 2.0])).encode(), "not 4 finite numbers"),
    (json.dumps(with_photo(embedding=[1.0, 2.0, 3.0, True])).encode(), "not 4 finite numbers"),
    (json.dumps(with_photo(embedding=[1.0, 2.0, 3.0, "4"])).encode(), "not 4 finite numbers"),
    (json.dumps(with_photo(embedding=[1.0, 2.0, 3.0, 1e400])).encode(), "not 4 finite numbers"),  # Infinity
    (json.dumps(with_photo(embedding=[1.0, 2.0, 3.0, float("nan")])).encode(), "not 4 finite numbers"),
])
def test_parse_refuses_each_kind_of_bad_file_in_one_line(data, fragment):
    with pytest.raises(ImprintError) as caught:
        parse(data)
    message = str(caught.value)
    assert fragment in message and "\n" not in message
    assert message.startswith("own/imprint.json: ") and message.endswith("delete it to imprint the photos again")


def test_parse_refuses_an_oversized_file_before_decoding_it():
    with pytest.raises(ImprintError, match="8,388,609 bytes, more than the 8,388,608 an imprint file may have"):
        parse(b" " * (MAX_FILE_BYTES + 1))


def test_parse_refuses_more_photos_than_an_imprint_takes(monkeypatch):
    monkeypatch.setattr(imprint, "MAX_PHOTOS", 3)
    with pytest.raises(ImprintError, match="4 photos, more than 3"):
        parse(imprint_doc(n_photos=4))
    assert len(parse(imprint_doc(n_photos=3))[1]) == 3
