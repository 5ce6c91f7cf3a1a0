"""The on-device classifier: a .tflite model plus its metadata behind one `classify()`.

    clf = Classifier(deployed.default_model_path())  # models/, else the shipped model
    result = clf.classify(bgr_photo)        # photo -> 28x28 -> model -> top-k
    result = clf.classify_input(image_28)   # an image already in the model's format
    probs = clf.predict(images_n_28_28)     # (N, C) float32, the evaluation path
    probs, feats = clf.predict_with_embedding(images)  # and (N, E) float32 embeddings

`predict` is the single path from uint8 model inputs to probabilities; the
converter's accuracy check, the benchmarks and the CLI all go through it.
Quantization comes from the model's own tensors, never assumed.

A model converted by this project has a second output, the embedding (the
features its last layer reads; metadata `embedding`). With `own` set (an
`imprint.Imprint` of the user's own photos), `classify` mixes the model's
probabilities with how close the embedding is to each class's own photos;
without it, `classify` is the model alone.

A top score below `Classifier.threshold` is reported as `unknown`. It defaults
to the threshold calibrated into the model's metadata (`unknown_threshold`),
else DEFAULT_THRESHOLD; every command's --threshold has the same default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract import CONTRACT
from .deployed import DEFAULT_THRESHOLD, MODEL_FILENAME
from .errors import ModelError
from .interpreter import find_interpreter, open_interpreter
from .metadata import read_metadata

UNKNOWN = "unknown"


def model_threshold(metadata: dict) -> float:
    """The model's own `unknown` threshold: its calibrated one, else DEFAULT_THRESHOLD. Pure."""
    return float(metadata.get("unknown_threshold", DEFAULT_THRESHOLD))


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float  # probability, 0..1


@dataclass
class Result:
    top_k: list[Prediction]
    probabilities: np.ndarray  # (C,) float32
    model_input: np.ndarray  # (H, W) uint8: exactly what the model saw
    threshold: float = 0.0

    @property
    def best(self) -> Prediction:
        return self.top_k[0]

    @property
    def is_unknown(self) -> bool:
        """Top score below the threshold (probably not one of the classes the model
        knows), or an all-black input: nothing stood out from the background (a
        blank wall, a one-colour image), so there is nothing to classify. The
        model's answer for an empty input is arbitrary and can be confident
        (the v4 model calls it Sandal, 0.64)."""
        return self.best.score < self.threshold or self.nothing_found

    @property
    def nothing_found(self) -> bool:
        """No garment stood out from the background: the model input is all black."""
        return bool(blank(self.model_input[None])[0])

    @property
    def label(self) -> str:
        return UNKNOWN if self.is_unknown else self.best.label

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "score": round(self.best.score, 6),
            "top_k": [{"index": p.index, "label": p.label, "score": round(p.score, 6)} for p in self.top_k],
            "nothing_found": self.nothing_found,
        }


def blank(model_inputs: np.ndarray) -> np.ndarray:
    """(N, H, W) model inputs -> (N,) bool: all black, i.e. nothing stood out from
    the photo's background. Such an input is reported unknown (Result.is_unknown)."""
    return ~np.asarray(model_inputs).reshape(len(model_inputs), -1).any(axis=1)


def top_k(probabilities: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """Highest k of one probability vector; ties go to the lower index. Pure."""
    k = max(1, min(k, len(probabilities)))
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [Prediction(int(i), labels[int(i)], float(probabilities[i])) for i in order]


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Real values -> integer tensor values: q = round(x / scale) + zero_point, saturated. Pure."""
    info = np.iinfo(dtype)
    q = np.rint(x.astype(np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor values -> real values: (q - zero_point) * scale. Pure."""
    return ((q.astype(np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


@dataclass
class TensorSpec:
    index: int
    shape: tuple  # as the model declares it, batch first
    dtype: type
    scale: float = 0.0  # 0 means not quantized
    zero_point: int = 0
    dynamic_batch: bool = field(default=False)

    @classmethod
    def from_details(cls, d: dict) -> "TensorSpec":
        scale, zero_point = d.get("quantization", (0.0, 0))
        signature = d.get("shape_signature", d["shape"])
        return cls(d["index"], tuple(int(s) for s in d["shape"]), d["dtype"], float(scale), int(zero_point),
                   dynamic_batch=len(signature) > 0 and int(signature[0]) == -1)

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)

    def dequantization_table(self) -> np.ndarray | None:
        """For an 8-bit quantized tensor, the real value of each of its 256 codes, indexed by
        the code's byte: `table[raw.view(np.uint8)]` is `dequantize(raw, ...)` bit for bit,
        in a third of the time (one lookup instead of three array passes). None otherwise."""
        if not self.quantized or np.dtype(self.dtype).itemsize != 1:
            return None
        codes = np.arange(256, dtype=np.uint8).view(self.dtype)  # byte b -> the code it holds
        return dequantize(codes, self.scale, self.zero_point)


def require_model_file(path: str | Path) -> Path:
    """`path` as a Path, or the one ModelError every command gives for a missing model."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"model {path} is a directory; pass the .tflite file, e.g. {path / MODEL_FILENAME}")
    if not path.is_file():
        raise ModelError(f"model {path} not found; run `make train convert` or pass --model PATH")
    return path


class Classifier:
    def __init__(self, model_path: str | Path, num_threads: int = 1, metadata: dict | None = None,
                 threshold: float | None = None, batch_size: int = 64, own=None):
        """threshold: a top score below it is `unknown`; None (the default) means the model's
        calibrated `unknown_threshold` from its metadata, else DEFAULT_THRESHOLD.
        own: an imprint.Imprint of the user's own photos for this model, or None."""
        self.model_path = require_model_file(model_path)
        self.metadata = metadata if metadata is not None else read_metadata(self.model_path)
        self.labels = list(self.metadata["labels"])
        self.threshold = model_threshold(self.metadata) if threshold is None else float(threshold)
        self.batch_size = batch_size
        self.backend = find_interpreter()  # which interpreter package runs the model
        try:
            self.interpreter = open_interpreter(self.backend, str(self.model_path), num_threads)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.model_path}: not a loadable TFLite model ({str(e).splitlines()[0]})") from e
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) not in (1, 2):
            raise ModelError(f"{self.model_path}: expected one input and one or two output tensors, "
                             f"found {len(inputs)} and {len(outputs)}")
        self.input = TensorSpec.from_details(inputs[0])
        self.output = TensorSpec.from_details(outputs[0])  # the class probabilities
        # The embedding, when the model has one and its metadata says so (output 1).
        has_embedding = len(outputs) == 2 and self.metadata.get("embedding", {}).get("output") == 1
        self.embedding = TensorSpec.from_details(outputs[1]) if has_embedding else None
        self._batch = self.input.shape[0]
        self._check_against_metadata()
        self.own = own
        # Per-call work decided once: raw pixels pass straight into the usual int8 model
        # (uint8, scale 1, zero point 0), and 8-bit outputs dequantize by table lookup.
        self._pixels_in = (self.input.quantized and self.input.dtype == np.uint8
                           and self.input.scale == 1.0 and self.input.zero_point == 0)
        self._tables = {spec.index: spec.dequantization_table() for spec in (self.output, self.embedding) if spec}

    # -- what the model expects ------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of one model input image."""
        return self.input.shape[1], self.input.shape[2]

    def _check_against_metadata(self) -> None:
        meta_in = self.metadata["input"]
        where = f"{self.model_path}"
        if len(self.input.shape) != 4 or self.input.shape[3] != 1:
            raise ModelError(f"{where}: input tensor is {list(self.input.shape)}, expected [N, H, W, 1] "
                             "grayscale; this is not a Fashion-MNIST model")
        if list(self.input.shape[1:]) != list(meta_in["shape"][1:]):
            raise ModelError(f"{where}: input tensor is {list(self.input.shape)} but its metadata says "
                             f"{meta_in['shape']}; the metadata belongs to another model")
        if np.dtype(self.input.dtype).name != meta_in["dtype"]:
            raise ModelError(f"{where}: input dtype is {np.dtype(self.input.dtype).name} but its metadata says "
                             f"{meta_in['dtype']}; the metadata belongs to another model")
        n_out = self.output.shape[-1]
        if len(self.labels) != n_out:
            raise ModelError(f"{where}: model has {n_out} outputs but its metadata lists {len(self.labels)} labels")
        if self.embedding is not None and list(self.embedding.shape[1:]) != list(self.metadata["embedding"].get("shape", [])[1:]):
            raise ModelError(f"{where}: embedding output is {list(self.embedding.shape)} but its metadata says "
                             f"{self.metadata['embedding'].get('shape')}; the metadata belongs to another model")
        contract = self.metadata.get("preprocessing", {}).get("contract")
        if contract != CONTRACT:
            raise ModelError(f"{where}: model expects preprocessing {contract!r}, this runtime provides "
                             f"{CONTRACT!r}; update edge_runtime or reconvert the model")

    # -- the one path from model inputs to probabilities -----------------------
    def _preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W) pixels -> the input tensor's dtype, quantized with its own parameters."""
        x = images[..., None]
        if self._pixels_in:
            return x  # the usual int8 model: raw camera pixels go straight in
        if self.input.quantized:
            return quantize(x, self.input.scale, self.input.zero_point, self.input.dtype)
        return x.astype(self.input.dtype)

    def _postprocess(self, raw: np.ndarray, spec: TensorSpec) -> np.ndarray:
        """Output tensor -> float32 values (N, C) probabilities or (N, E) embeddings."""
        table = self._tables.get(spec.index)
        if table is not None:
            return table[raw.view(np.uint8)]
        if spec.quantized:
            return dequantize(raw, spec.scale, spec.zero_point)
        return raw.astype(np.float32)

    def _resize_batch(self, n: int) -> None:
        if n != self._batch:
            self.interpreter.resize_tensor_input(self.input.index, [n, *self.input.shape[1:]])
            self.interpreter.allocate_tensors()
            self._batch = n

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) float32 for uint8 model inputs (N, H, W) or one (H, W)."""
        return self._run(images, embedding=False)[0]

    def predict_with_embedding(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, C) and embeddings (N, E), float32, from the same invocations."""
        if self.embedding is None:
            raise ModelError(f"{self.model_path}: this model has no embedding output; "
                             "reconvert it with this project's converter (make convert)")
        return self._run(images, embedding=True)

    def _run(self, images: np.ndarray, embedding: bool) -> tuple[np.ndarray, np.ndarray | None]:
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[1:] != self.input_size:
            raise ValueError(f"expected images of shape (N, {self.input_size[0]}, {self.input_size[1]}), "
                             f"got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels, got {images.dtype}")
        # Batches only where the model allows a dynamic batch axis; the last
        # chunk is padded so the interpreter is not re-allocated for it.
        chunk = self.batch_size if self.input.dynamic_batch else 1
        chunk = min(chunk, len(images)) or 1
        self._resize_batch(chunk)
        if len(images) == 1:  # one camera frame or photo: the same steps without the batching around them
            self.interpreter.set_tensor(self.input.index, self._preprocess(images))
            self.interpreter.invoke()
            out = self._postprocess(self.interpreter.get_tensor(self.output.index), self.output)
            if not embedding:
                return out, None
            return out, self._postprocess(self.interpreter.get_tensor(self.embedding.index), self.embedding)
        out = np.empty((len(images), self.output.shape[-1]), np.float32)
        features = np.empty((len(images), self.embedding.shape[-1]), np.float32) if embedding else None
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            n = len(part)
            if n < chunk:
                part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), np.uint8)])
            self.interpreter.set_tensor(self.input.index, self._preprocess(part))
            self.interpreter.invoke()
            out[start:start + n] = self._postprocess(self.interpreter.get_tensor(self.output.index), self.output)[:n]
            if embedding:
                raw = self.interpreter.get_tensor(self.embedding.index)
                features[start:start + n] = self._postprocess(raw, self.embedding)[:n]
        return out, features

    # -- user-facing ----------------------------------------------------------
    def classify_input(self, model_input: np.ndarray, k: int = 3) -> Result:
        """Classify one image already in the model's format: uint8 (H, W), bright garment on black."""
        own = self.own  # read once: serve swaps in a new imprint from another thread
        if own is None:
            probabilities = self.predict(model_input)[0]
        else:
            probabilities, features = self.predict_with_embedding(model_input)
            probabilities = own.mix(probabilities, features)[0]
        return Result(top_k(probabilities, self.labels, k), probabilities, np.asarray(model_input), self.threshold)

    def classify(self, image: np.ndarray, k: int = 3) -> Result:
        """Classify a photo or camera frame (BGR, BGRA or grayscale, any size)."""
        from .photo import photo_to_input  # OpenCV, imported only when photos are used
        return self.classify_input(photo_to_input(image, self.input_size), k)
