"""Why an int8 model missed the gate, layer by layer, and what to try.

When the gate refuses the int8 model, the converter runs TensorFlow's
QuantizationDebugger on a sample of training images (not the calibration
images, whose ranges fit by construction): it runs every quantized op
beside its float twin on the same input and gives the error of each op's
output. Three figures per layer, each measured against what int8 rounding
alone would give:

- error: the RMSE between the float and the int8 output, in int8 steps
  (the tensor's scale). Rounding alone gives 1/sqrt(12) = 0.29 steps; more
  means the op's weights or output don't fit int8.
- clipped: the share of the float model's values that fall outside the
  int8 range calibrated for the tensor: the calibration images never
  reached the activations these images do.
- drowned: the share of active channels whose values vary by less than
  one int8 step, so int8 turns them into a constant: the tensor's one
  shared range is set by a few outlier channels.

The worst layers get a finding (what is likely wrong, what to try), and
the converter measures the rescue: the int8 model with each of them kept in
float (selective quantization, `--float_layers`), its accuracy on the
sample, size and latency. The figures are heuristics that point at a
layer; the rescue measurement is what shows whether keeping it in float
helps.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field

import numpy as np

ROUNDING_STEPS = 1 / np.sqrt(12)  # RMSE of rounding alone, in int8 steps
CLIPPED_LIMIT = 0.001  # share of values outside the calibrated range worth reporting
DROWNED_LIMIT = 0.10  # share of active channels below one step worth reporting
ERROR_LIMIT = 1.0  # int8 steps: over three times what rounding alone gives
# Ops whose int8 output keeps their input's scale: an outlier-set range passes through them.
SAME_SCALE_OPS = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SQUEEZE", "TRANSPOSE"}


@dataclass
class LayerFigures:
    tensor: str  # the TFLite tensor the op writes
    op: str  # its TFLite op type, e.g. CONV_2D
    layers: list[str]  # the Keras layers fused into the op, in model order
    error_steps: float  # RMSE float vs int8 output, in int8 steps
    scale: float  # one int8 step of the output, in the tensor's units
    clipped: float | None = None  # share of float values outside the int8 range; None: not measured
    drowned: float | None = None  # share of active channels varying by less than one step
    channels: int = 0  # active channels (drowned's denominator)
    clip_steps: float = 0.0  # RMSE that clipping to the int8 range alone causes, in int8 steps
    readers: list[str] = field(default_factory=list)  # layers of the next ops, up to the first that computes

    @property
    def name(self) -> str:
        """The Keras layer whose output this tensor is (the last one fused in), else the op type."""
        return self.layers[-1] if self.layers else self.op


def severity(f: LayerFigures) -> float:
    """How many times worse than int8 rounding alone, by the worst of the three figures. Pure.

    1 is what a well quantized layer shows; 1% of values clipped counts as 2,
    10% of channels drowned as 2.
    """
    return max(f.error_steps / ROUNDING_STEPS, 1 + 100 * (f.clipped or 0.0), 1 + 10 * (f.drowned or 0.0))


def findings(f: LayerFigures, batchnorms: set[str]) -> list[tuple[str, str]]:
    """(what is likely wrong, what to try) for one layer. Pure."""
    out = []
    # Clipping explains a large error when clipping alone is already a large one: the
    # debugger's error then also holds what the clipped values did to the rest.
    clipping = f.clipped is not None and f.clipped > CLIPPED_LIMIT and f.clip_steps > ERROR_LIMIT
    if f.clipped is not None and f.clipped > CLIPPED_LIMIT:
        out.append((f"{f.clipped:.1%} of its float values fall outside the int8 range calibrated for it "
                    f"(an error of {f.clip_steps:.1f} steps from clipping alone): the calibration images "
                    "don't reach the activations real images do (too few, or unlike the real inputs)",
                    "calibrate on more images (--calibration_size 2000) or on images like the real inputs"))
    if f.drowned is not None and f.drowned > DROWNED_LIMIT:
        out.append((f"its int8 range is set by a few outlier channels: {f.drowned:.0%} of its {f.channels} "
                    "active channels vary by less than one int8 step and become constants",
                    f"keep it and the layer that reads it in float (--float_layers {','.join(keep_pair(f))}), "
                    "or retrain with bounded activations (ReLU6) or more weight decay"))
    folded_bn = [name for name in f.layers if name in batchnorms]
    if f.error_steps > ERROR_LIMIT and not clipping:
        why = (f"its int8 output is off by {f.error_steps:.1f} steps where rounding alone gives "
               f"{ROUNDING_STEPS:.2f}: its weights or output don't fit int8")
        if folded_bn and f.op in ("MUL", "ADD"):
            why += f" (BatchNorm {folded_bn[0]} could not be folded into a conv or dense layer)"
        elif folded_bn:
            why += (f" (BatchNorm {folded_bn[0]} was folded into its weights; per-channel scales that "
                    "span a wide range leave small rows few int8 levels)")
        out.append((why, f"keep it in float (--float_layers {f.name})"))
    if not out:
        out.append(("its figures are within int8's rounding: the loss is spread over many layers",
                    "calibrate on more images, or keep the layers named here in float"))
    return out


def keep_pair(f: LayerFigures) -> list[str]:
    """The layers to keep in float for a drowned output: it and its readers up to the first
    op that computes, so the output is never quantized with the range the outliers set. Pure."""
    return list(dict.fromkeys([f.name, *f.readers]))


def calibration_problem(calibration: np.ndarray) -> str | None:
    """What is wrong with the calibration images as a set, if anything. Pure."""
    if len(calibration) < 100:
        return f"only {len(calibration)} calibration images (--calibration_size, default 500)"
    distinct = len({image.tobytes() for image in calibration[:1000]})
    if distinct < min(len(calibration), 1000) / 2:
        return f"the calibration images repeat: {distinct} distinct among {min(len(calibration), 1000)}"
    return None


def rank(figures: list[LayerFigures]) -> list[LayerFigures]:
    """Worst first (severity, then error). Pure."""
    return sorted(figures, key=lambda f: (severity(f), f.error_steps), reverse=True)


def worst(figures: list[LayerFigures], top: int = 3, floor: float = 1.5) -> list[LayerFigures]:
    """The `top` worst layers at least `floor` times worse than rounding; the worst one at least.
    A pool or reshape only passes its input's range on: its producer is named instead. Pure."""
    ranked = rank([f for f in figures if f.op not in SAME_SCALE_OPS]) or rank(figures)
    return [f for f in ranked[:top] if severity(f) >= floor] or ranked[:1]


def rescue_candidates(worst_layers: list[LayerFigures], float_layers: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The float layer sets worth measuring: the current one, each worst layer added alone
    (with its reader when its output drowns), then all of them. Pure."""
    def with_(names):
        return tuple(dict.fromkeys((*float_layers, *names)))
    singles = []
    for f in worst_layers:
        if f.layers:
            names = keep_pair(f) if (f.drowned or 0) > DROWNED_LIMIT else [f.name]
            if with_(names) not in singles and with_(names) != tuple(float_layers):
                singles.append(with_(names))
    together = with_(n for names in singles for n in names)
    new = len(singles) > 1 and not any(set(together) == set(names) for names in singles)
    return [tuple(float_layers), *singles] + ([together] if new else [])


def activation_figures(values: np.ndarray, scale: float, zero_point: int) -> tuple[float, float, int, float]:
    """(clipped share, drowned share, active channels, clipping error in steps) of float `values`
    (N, ..., C) against an int8 tensor's scale and zero point. Pure."""
    low, high = (-128 - zero_point) * scale, (127 - zero_point) * scale
    v = values.reshape(-1, values.shape[-1]).astype(np.float32)
    clipped = float(((v < low - scale / 2) | (v > high + scale / 2)).mean())
    clip_steps = float(np.sqrt(np.mean((v - np.clip(v, low, high)) ** 2)) / scale)
    active = v.max(0) > v.min(0)
    drowned = float((v.std(0)[active] < scale).mean()) if active.any() else 0.0
    return clipped, drowned, int(active.sum()), clip_steps


def figures_from_dump(dump: str, layer_names: list[str]) -> list[LayerFigures]:
    """LayerFigures (without activation figures) from QuantizationDebugger.layer_statistics_dump. Pure."""
    from .export import layers_in
    out: list[LayerFigures] = []
    for row in csv.DictReader(io.StringIO(dump)):  # in the order the ops run
        scale = float(row["scale"])
        if not scale:
            continue
        out.append(LayerFigures(tensor=row["tensor_name"], op=row["op_name"],
                                layers=layers_in(row["tensor_name"], layer_names),
                                error_steps=float(np.sqrt(float(row["mean_squared_error"]))) / scale, scale=scale))
    for i, f in enumerate(out):
        for after in out[i + 1:]:
            if after.layers:
                f.readers.append(after.name)
            if after.op not in SAME_SCALE_OPS:
                break
    return out


def text(diagnosis: dict) -> str:
    """The diagnosis for people: printed, and written as int8_diagnosis.md. Pure."""
    lines = [f"int8 diagnosis ({diagnosis['images']} training images, not the calibration ones; "
             f"rounding alone gives {ROUNDING_STEPS:.2f} steps):", ""]
    if diagnosis.get("calibration"):
        lines += [f"calibration: {diagnosis['calibration']}; calibrate on more, varied training images", ""]
    for i, w in enumerate(diagnosis["worst"], 1):
        clipped = "-" if w["clipped"] is None else f"{w['clipped']:.1%}"
        drowned = "-" if w["drowned"] is None else f"{w['drowned']:.0%}"
        fused = f"; fused: {', '.join(w['layers'])}" if len(w["layers"]) > 1 else ""
        lines.append(f"{i}. {w['name']} ({w['op']}{fused}): error {w['error_steps']:.2f} steps, clipped {clipped}, "
                     f"drowned channels {drowned}")
        for why, fix in w["findings"]:
            lines += [f"   likely: {why}", f"   try: {fix}"]
    rescue = diagnosis.get("rescue") or []
    if rescue:
        lines += ["", "Measured on the same images (Keras float top-1 "
                      f"{diagnosis['keras_accuracy']:.2%}):", "",
                  "| kept in float | top-1 | vs Keras (pp) | size | latency (1 image) |", "|---|---:|---:|---:|---:|"]
        for r in rescue:
            kept = ", ".join(r["float_layers"]) or "nothing (full int8)"
            lines.append(f"| {kept} | {r['accuracy']:.2%} | {(r['accuracy'] - diagnosis['keras_accuracy']) * 100:+.2f} "
                         f"| {r['size_bytes'] / 1024:.1f} KB | {r['latency_us']:.0f} µs |")
        lines += ["", "Reconvert with the best row: python -m convert --float_layers NAME[,NAME...]"]
    return "\n".join(lines) + "\n"


# -- the run: TensorFlow, the debugger, the interpreter ---------------------------

def diagnose(model, calibration: np.ndarray, images: np.ndarray, labels: np.ndarray,
             float_layers: tuple[str, ...] = (), top: int = 3, latency_runs: int = 50) -> dict:
    """Run the debugger on `images` (uint8 (N, 28, 28)) and measure the rescue of the `top` worst layers."""
    import keras
    import tensorflow as tf

    from . import export
    from .fold import fold_relu_batchnorm

    model = fold_relu_batchnorm(model)  # the graph export.convert quantizes
    names = [layer.name for layer in model.layers]
    # BatchNorms the fold left (a folded one is a per-channel shift now, under the same name)
    batchnorms = {layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}

    def debug_data():
        for image in images:
            yield [image[None, :, :, None].astype(np.float32)]

    def run_debugger():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=export.int8_converter(model, calibration), debug_dataset=debug_data)
        if float_layers:
            nodes, ops = export.float_nodes(export.tensor_names(debugger.calibrated_model), float_layers, names)
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes or None,
                                                                            denylisted_ops=ops or None)
        debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
        return debugger.calibrated_model, dump.getvalue()

    calibrated, dump = export.run_converter("int8", run_debugger)
    figures = figures_from_dump(dump, names)
    _add_activation_figures(model, figures, images, dump)
    worst_layers = worst(figures, top)
    keras_probs = model.predict(images[..., None].astype(np.float32), batch_size=256, verbose=0)
    diagnosis = {"images": int(len(images)), "keras_accuracy": float((keras_probs.argmax(1) == labels).mean()),
                 "calibration": calibration_problem(calibration),
                 "layers": [{**asdict(f), "name": f.name, "severity": round(severity(f), 2)} for f in rank(figures)],
                 "worst": [{**asdict(f), "name": f.name, "findings": findings(f, batchnorms)} for f in worst_layers]}
    diagnosis["rescue"] = [_measure(calibrated, kept, names, images, labels, latency_runs)
                           for kept in rescue_candidates(worst_layers, tuple(float_layers))]
    return diagnosis


def _add_activation_figures(model, figures: list[LayerFigures], images: np.ndarray, dump: str) -> None:
    """Clipped and drowned shares from the float model's own activations at each tensor's layer."""
    import keras
    zero_points = {row["tensor_name"]: int(row["zero_point"]) for row in csv.DictReader(io.StringIO(dump))
                   if float(row["scale"])}
    measured = [f for f in figures if f.layers]
    outputs = list(dict.fromkeys(f.name for f in measured))
    if not outputs:
        return
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in outputs])
    values = probe.predict(images[..., None].astype(np.float32), batch_size=256, verbose=0)
    values = dict(zip(outputs, values if len(outputs) > 1 else [values]))
    for f in measured:
        f.clipped, f.drowned, f.channels, f.clip_steps = activation_figures(values[f.name], f.scale,
                                                                            zero_points[f.tensor])


def _measure(calibrated: bytes, kept: tuple[str, ...], layer_names: list[str], images: np.ndarray,
             labels: np.ndarray, latency_runs: int) -> dict:
    """Top-1 on `images`, size and single-image latency of the int8 model with `kept` in float."""
    from . import export
    flatbuffer = export.run_converter("int8", lambda: export.quantize(calibrated, kept, layer_names))
    interpreter = _interpreter(flatbuffer)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    predicted = np.empty(len(images), np.int64)
    for i, image in enumerate(images):
        interpreter.set_tensor(inp["index"], image[None, :, :, None])
        interpreter.invoke()
        predicted[i] = interpreter.get_tensor(out["index"])[0].argmax()
    return {"float_layers": list(kept), "accuracy": float((predicted == labels).mean()),
            **_size_latency(flatbuffer, interpreter, latency_runs)}


def _interpreter(flatbuffer: bytes):
    from edge_runtime.interpreter import find_interpreter
    interpreter = find_interpreter().factory(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def _size_latency(flatbuffer: bytes, interpreter, runs: int) -> dict:
    """Size and median single-image invoke time, µs (the input as last set, zeros if never)."""
    from edge_runtime.timing import latency_stats
    return {"size_bytes": len(flatbuffer),
            "latency_us": latency_stats(interpreter.invoke, runs, min(10, runs))["median_us"]}


def float_layer_cost(model, calibration: np.ndarray, float_layers: tuple[str, ...], runs: int) -> dict:
    """What keeping `float_layers` in float costs: size and latency against full int8, both
    quantized from one calibration."""
    from . import export
    from .fold import fold_relu_batchnorm
    model = fold_relu_batchnorm(model)
    names = [layer.name for layer in model.layers]
    calibrated = export.run_converter("int8", lambda: export.calibrate(export.int8_converter(model, calibration)))
    figures = {}
    for key, kept in (("full_int8", ()), ("selective", float_layers)):
        flatbuffer = export.run_converter("int8", lambda: export.quantize(calibrated, kept, names))
        figures[key] = _size_latency(flatbuffer, _interpreter(flatbuffer), runs)
    return {"layers": list(float_layers), **figures,
            "size_cost_bytes": figures["selective"]["size_bytes"] - figures["full_int8"]["size_bytes"],
            "latency_cost_us": round(figures["selective"]["latency_us"] - figures["full_int8"]["latency_us"], 1)}


DIAGNOSIS = "int8_diagnosis.md"  # beside the rejected model and its report
SAMPLE_PER_CLASS = 100  # 1,000 training images: a few seconds through the debugger


def diagnose_gate(model, calibration: np.ndarray, data, float_layers: tuple[str, ...], seed: int, out_dir) -> dict:
    """The pipeline's hook where the gate fails: diagnose on training images the calibration
    sample did not take, write DIAGNOSIS into `out_dir`, return the figures (or the error
    that stopped the diagnosis: it never hides the gate's own message)."""
    from pathlib import Path

    from edge_runtime.dataset import stratified_indices
    print("the int8 model missed the gate; diagnosing it layer by layer...", flush=True)
    # The calibration sample is stratified_indices(labels, size // 10, seed)'s held part:
    # draw from the rest, so the diagnosis sees ranges the calibration never fitted.
    _, rest = stratified_indices(data.train_labels, max(1, len(calibration) // 10), seed)
    pick = rest[stratified_indices(data.train_labels[rest], SAMPLE_PER_CLASS, seed + 1)[0]]
    try:
        diagnosis = diagnose(model, calibration, data.train_images[pick], data.train_labels[pick], float_layers)
    except Exception as e:  # the debugger is experimental; the gate's verdict stands without it
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return {"error": f"the diagnosis failed: {first}"}
    diagnosis["text"] = text(diagnosis)
    (Path(out_dir) / DIAGNOSIS).write_text("# Why the int8 model missed the gate\n\n" + diagnosis["text"])
    return diagnosis
