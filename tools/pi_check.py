"""The emulated Raspberry Pi check's two halves: `run` and `compare`.

    python tools/pi_check.py run --model M --out host.json [--photos DIR]
    qemu-aarch64-static -cpu cortex-a72 -L ROOTFS ROOTFS/usr/bin/python3.11 \\
        tools/pi_check.py run --model M --out pi.json --expect_machine aarch64 --forbid_tensorflow
    python tools/pi_check.py compare host.json pi.json

`run` is the same code on the build machine and under emulation, in one
process (an emulated program can't start another one: no binfmt). It loads
the model through `edge_runtime.Classifier` and records, as JSON:

- the raw output tensor values (uint8/int8 before dequantization) for the
  first N Fashion-MNIST test images, read from the IDX files by
  `edge_runtime.dataset`: identical 28x28 inputs on both machines, so any
  difference is the CPU's or the wheels';
- the same through the interpreter's reference kernels (BUILTIN_REF);
- end to end through `Classifier.classify` (photo preprocessing included):
  synthetic photos made deterministically with integer numpy, plus real
  photos from --photos DIR when given;
- checks: machine, interpreter package, TensorFlow absent,
  `python -m edge_runtime doctor --json`, and `serve` started in-process
  on 127.0.0.1 answering /api/latest;
- with --peers DIR, the ONNX export of the same Keras model (float32 and
  int8, `python -m tools.peers models`) through ONNX Runtime on the same
  test images: a benchmark-only peer, never the device's, whose agreement
  with the host's ONNX Runtime and with LiteRT `compare` reports (not
  speed, and never as a failure).

`compare` prints a side-by-side summary and every difference, and exits 1
on any mismatch, except two differences that are explained and that a real
Pi shows too (PI_STRICT=1 / --strict refuses them as well):
- one output step on aarch64 for a model with a quantized SOFTMAX
  (TFLite's optimized int8 softmax is another algorithm on aarch64);
- photos whose 28x28 model input came out differently (float rounding in
  OpenCV/numpy) are compared by label.
It needs only the standard library.

Runs on Python 3.10+ (what the runtime requires) and numpy 1.24+ (32-bit Raspberry Pi OS has Debian's
numpy 1.24).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

SCHEMA = "fashion-edge-pi-check/1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp")
# OpenCV's and numpy's float code (colour conversion, resize, blur, sqrt)
# rounds differently with NEON than with SSE/AVX, and photo preprocessing
# chains thresholds on such values: the 28x28 model input made from the same
# photo may differ, usually in a few pixels by a grey level or two, sometimes
# a lot (a pixel on the segmentation threshold moves the crop). Those photos
# are compared by label: a different label fails, unless the host's own
# probabilities for the two labels were within FLIP_MARGIN (the model was
# torn between them anyway). PI_STRICT=1 fails any difference.
FLIP_MARGIN = 0.10
LARGE_PREPROCESS_DIFF = 16  # pixels of 784: more than rounding, reported as such


# --------------------------------------------------------------------------- run

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _module_file(name: str) -> str | None:
    module = sys.modules.get(name)
    return getattr(module, "__file__", None) if module else None


def _dist_version(name: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _read_photo(path: Path):
    """A photo file as decoded pixels, with the runtime's own reader."""
    from edge_runtime.imageio import read_image
    return read_image(path)


def _raw_outputs(clf, probabilities):
    """The output tensor's values before dequantization, recovered exactly from `predict`'s floats.

    Dequantization is (q - zero_point) * scale in float32, which is exact and
    one-to-one for the 256 possible q, so rounding back gives q; we check it.
    """
    import numpy as np
    from edge_runtime.classifier import dequantize
    spec = clf.output
    if not spec.quantized:
        return "float32", [[float(v) for v in row] for row in probabilities]
    q = np.rint(probabilities / np.float32(spec.scale)) + spec.zero_point
    q = q.astype(np.int64)
    if not np.array_equal(dequantize(q, spec.scale, spec.zero_point), probabilities):
        raise RuntimeError("output values are not exact dequantized integers; can't recover raw outputs")
    return np.dtype(spec.dtype).name, q.tolist()


def _reference_pass(clf, model: Path, images) -> dict:
    """Raw outputs from a second interpreter of the same package with only reference kernels."""
    import numpy as np
    from edge_runtime.classifier import quantize
    module = sys.modules.get(getattr(clf.backend.factory, "__module__", ""), None)
    resolver = getattr(module, "OpResolverType", None)
    if resolver is None:
        return {"status": "skipped", "detail": f"{clf.backend.package} has no OpResolverType"}
    interpreter = clf.backend.factory(model_path=str(model), num_threads=1,
                                      experimental_op_resolver_type=resolver.BUILTIN_REF)
    interpreter.allocate_tensors()
    try:
        ops = [op["op_name"] for op in interpreter._get_ops_details()]
    except Exception:  # a private helper: its absence only loses information
        ops = None
    spec_in, spec_out = clf.input, clf.output
    x = images[..., None]
    if spec_in.quantized and not (spec_in.dtype == np.uint8 and spec_in.scale == 1.0 and spec_in.zero_point == 0):
        x = quantize(x, spec_in.scale, spec_in.zero_point, spec_in.dtype)
    else:
        x = x.astype(spec_in.dtype)
    raw = []
    for i in range(len(x)):  # batch 1, as the model declares: no resizing
        interpreter.set_tensor(spec_in.index, x[i:i + 1])
        interpreter.invoke()
        out = interpreter.get_tensor(spec_out.index)[0]
        raw.append(out.tolist() if np.issubdtype(out.dtype, np.integer) else [float(v) for v in out])
    return {"status": "ok", "detail": "BUILTIN_REF kernels", "raw": raw, "ops": ops}


def _checks(args, backend) -> list[dict]:
    checks = []

    def check(name, ok, detail):
        checks.append({"name": name, "ok": bool(ok), "detail": str(detail)})

    machine = platform.machine()
    if args.expect_machine:
        check("machine", machine == args.expect_machine, f"platform.machine() is {machine!r}, "
              f"expected {args.expect_machine!r}")
    check("interpreter", backend is not None and backend.package != "tensorflow",
          f"{backend.package} {backend.version}" if backend else "none found")
    if args.forbid_tensorflow:
        check("tensorflow not imported", "tensorflow" not in sys.modules,
              "tensorflow is in sys.modules" if "tensorflow" in sys.modules else "not in sys.modules")
        spec = importlib.util.find_spec("tensorflow")
        check("tensorflow not installed", spec is None,
              f"importable from {spec.origin}" if spec else "not importable")
    return checks


def _doctor(model: Path, expect_machine: str | None) -> dict:
    """`python -m edge_runtime doctor --json` in this process (the CLI's own path), output captured."""
    if importlib.util.find_spec("edge_runtime.doctor") is None:
        return {"status": "absent", "detail": "this edge_runtime has no doctor command; "
                                              "pi_check's own checks stand in for it"}
    from edge_runtime import cli
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["doctor", "--json", "--model", str(model)])
    except SystemExit as e:  # argparse errors
        code = e.code if isinstance(e.code, int) else 2
    except Exception as e:  # a crash is a finding, not a reason to lose the other results
        return {"status": "failed", "detail": f"python -m edge_runtime doctor crashed: {type(e).__name__}: {e}",
                "exit_code": None, "output": (out.getvalue() + err.getvalue())[-4000:]}
    text = out.getvalue()
    result = {"exit_code": code, "output": (text + err.getvalue())[-4000:]}
    try:
        checks = json.loads(text)["checks"]
    except (ValueError, KeyError, TypeError):
        return dict(result, status="failed", detail=f"exit status {code}, output is not doctor's JSON")
    by_name = {c.get("name"): c for c in checks}
    problems = [f"{c['name']}: {c['detail']}" for c in checks if c.get("status") == "FAIL"]
    if code != 0:
        problems.insert(0, f"exit status {code}")
    arch = by_name.get("architecture", {}).get("detail", "")
    if expect_machine and not arch.startswith(expect_machine):
        problems.append(f"architecture check says {arch!r}, expected {expect_machine}")
    working = [c for c in checks if c.get("status") == "ok"
               and any(k in c.get("name", "") + c.get("detail", "") for k in ("ai-edge-litert", "tflite-runtime"))]
    if not working:
        problems.append("reports no working interpreter")
    result["checks"] = [f"{c.get('status')} {c.get('name')}: {c.get('detail')}" for c in checks]
    return dict(result, status="failed" if problems else "ok",
                detail="; ".join(problems) or f"ready; architecture {arch}")


def _serve(model: Path, timeout_s: float = 180.0) -> dict:
    """`python -m edge_runtime serve` in this process: it starts on 127.0.0.1 with a
    video of the synthetic frame, and /api/latest answers with a prediction.

    In-process through the CLI's own parser and serve.start, because an
    emulated program can't start another one (no binfmt).
    """
    if importlib.util.find_spec("edge_runtime.serve") is None:
        return {"status": "absent", "detail": "this edge_runtime has no serve command"}
    import tempfile
    import urllib.error
    import urllib.request
    try:
        import cv2
        from edge_runtime import cli, serve
        from edge_runtime.synthetic import synthetic_frame
        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "clip.avi"
            frame = synthetic_frame()
            writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, frame.shape[1::-1])
            for _ in range(5):
                writer.write(frame)
            writer.release()
            args = cli.build_parser().parse_args(["serve", str(clip), "--port", "0", "--model", str(model)])
            t = time.perf_counter()
            service = serve.start(args, log=lambda message: None)
            try:
                deadline = time.monotonic() + timeout_s  # emulated, the first frame takes a while
                while True:
                    try:
                        with urllib.request.urlopen(service.url + "api/latest?after=-1", timeout=60) as r:
                            latest = json.loads(r.read())
                        break
                    except urllib.error.HTTPError as e:
                        if e.code != 503 or time.monotonic() > deadline:  # 503: no frame yet
                            raise
                        time.sleep(0.2)
                seconds = time.perf_counter() - t
            finally:
                service.close()
        return {"status": "ok", "latest": {k: latest[k] for k in ("frame", "label", "score", "unknown")},
                "detail": f"started and answered /api/latest in {seconds:.1f} s: frame {latest['frame']}, "
                          f"{latest['label']} {latest['score']:.2f}"}
    except Exception as e:  # a finding, recorded: the other results still count
        return {"status": "failed", "detail": f"{type(e).__name__}: {e}".splitlines()[0]}


def run(args) -> int:
    t0 = time.perf_counter()
    timings = {}
    import numpy as np
    import edge_runtime
    from edge_runtime import dataset
    from edge_runtime.interpreter import find_interpreter

    backend = None
    try:
        backend = find_interpreter(allow_tensorflow=not args.forbid_tensorflow)
    except Exception as e:  # recorded as a failed check below
        print(f"pi_check: {e}", file=sys.stderr)
    timings["imports"] = time.perf_counter() - t0

    result = {
        "schema": SCHEMA,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "packages": {
            "numpy": np.__version__,
            "interpreter": f"{backend.package} {backend.version}" if backend else None,
            "edge_runtime": getattr(edge_runtime, "__version__", None),
        },
        "modules": {},
        "checks": _checks(args, backend),
    }
    model = Path(args.model)
    if not model.is_file():
        from edge_runtime.errors import ModelError
        raise ModelError(f"model {model} not found")
    result["model"] = {"path": str(model), "sha256": _sha256(model.read_bytes())}
    if backend is None:
        result["error"] = "no interpreter"
        return _write(args.out, result, 1)

    t = time.perf_counter()
    clf = edge_runtime.Classifier(model, num_threads=args.threads, batch_size=args.batch_size)
    timings["load_model"] = time.perf_counter() - t
    spec = clf.output
    result["model"].update(output_dtype=np.dtype(spec.dtype).name, output_scale=spec.scale,
                           output_zero_point=spec.zero_point, interpreter=clf.backend.package)

    # Identical 28x28 inputs on both machines: the model and interpreter alone.
    t = time.perf_counter()
    data_dir = dataset.find_data_dir(args.data_dir)
    images_path = dataset.file_in(data_dir, dataset.FILES["test_images"])
    labels_path = dataset.file_in(data_dir, dataset.FILES["test_labels"])
    images = dataset.read_idx(images_path, dataset.FILES["test_images"])[:args.count]
    labels = dataset.read_idx(labels_path, dataset.FILES["test_labels"])[:args.count]
    timings["read_test_set"] = time.perf_counter() - t
    t = time.perf_counter()
    probabilities = clf.predict(images)
    timings["predict_test_set"] = time.perf_counter() - t
    kind, raw = _raw_outputs(clf, probabilities)
    predicted = probabilities.argmax(axis=1)
    result["test_set"] = {
        "source": str(images_path), "count": int(len(images)),
        "images_sha256": _sha256(np.ascontiguousarray(images).tobytes()),
        "labels": labels.tolist(), "raw_dtype": kind, "raw": raw, "predicted": predicted.tolist(),
        "accuracy": float((predicted == labels).mean()),
    }

    # The same images through the interpreter's reference kernels: portable
    # integer C++, the same algorithm on every CPU, so it must agree exactly.
    t = time.perf_counter()
    result["reference"] = _reference_pass(clf, model, images)
    result["model"]["ops"] = result["reference"].pop("ops", None)
    timings["reference_kernels"] = time.perf_counter() - t

    # The peers: the same images through ONNX Runtime, for agreement only.
    t = time.perf_counter()
    result["peers"] = _peers(args.peers, args.peers_note, images)
    timings["peers"] = time.perf_counter() - t

    # End to end: photo -> photo_to_input -> model -> label.
    t = time.perf_counter()
    result["photos"] = _photos(clf, args.photos, args.photo_limit)
    timings["photos"] = time.perf_counter() - t
    if result["photos"]["status"] == "ok":
        import cv2
        result["packages"]["opencv"] = cv2.__version__

    t = time.perf_counter()
    result["doctor"] = _doctor(model, args.expect_machine)
    timings["doctor"] = time.perf_counter() - t

    t = time.perf_counter()
    result["serve"] = _serve(model)
    timings["serve"] = time.perf_counter() - t

    for name in ("edge_runtime", "numpy", "cv2", "ai_edge_litert", "tflite_runtime", "onnxruntime"):
        result["modules"][name] = _module_file(name)
    for dist in ("fashion-edge-runtime", "numpy", "opencv-python-headless", "ai-edge-litert", "tflite-runtime"):
        result["packages"].setdefault("dist:" + dist, _dist_version(dist))
    timings["total"] = time.perf_counter() - t0
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return _write(args.out, result, 0)


def _peers(directory, note, images) -> dict:
    """Each ONNX model in `directory` through ONNX Runtime (one thread) on `images`: its
    probabilities, or why it did not run. Not installed is a finding, not an error."""
    if not directory:
        return {"status": "skipped", "detail": note or "not asked for (--peers DIR)"}
    try:
        import onnxruntime as ort
    except ImportError as e:
        return {"status": "skipped", "detail": f"onnxruntime is not importable here ({e})"}
    import numpy as np
    models = {}
    for path in sorted(Path(directory).glob("*.onnx")):
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            probs = session.run(None, {name: np.asarray(images)[..., None].astype(np.float32)})[0]
            models[path.stem] = {"status": "ok", "probabilities": [[float(v) for v in row] for row in probs],
                                 "predicted": [int(i) for i in probs.argmax(axis=1)]}
        except Exception as e:  # a peer that fails here is a finding to report
            models[path.stem] = {"status": "failed", "detail": f"{type(e).__name__}: {e}".splitlines()[0][:240]}
    if not models:
        return {"status": "skipped", "detail": f"no .onnx models in {directory}"}
    return {"status": "ok", "detail": f"onnxruntime {ort.__version__}", "onnxruntime": ort.__version__,
            "models": models}


def _photos(clf, photo_dir, photo_limit: int = 0) -> dict:
    if importlib.util.find_spec("edge_runtime.photo") is None:
        return {"status": "skipped", "detail": "edge_runtime.photo is not in this runtime yet", "items": []}
    import numpy as np
    from edge_runtime.synthetic import synthetic_photos
    sources = [("synthetic", name, lambda im=im: im) for name, im in synthetic_photos()]
    if photo_dir:
        files = sorted(p for p in Path(photo_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if 0 < photo_limit < len(files):  # evenly spread over the sorted names: every category, fewer photos
            files = [files[i * len(files) // photo_limit] for i in range(photo_limit)]
        sources += [("photo", str(p.relative_to(photo_dir)), lambda p=p: _read_photo(p)) for p in files]
    items = []
    for kind, name, load in sources:
        item = {"kind": kind, "name": name}
        try:
            image = np.ascontiguousarray(load())
            item.update(shape=list(image.shape), image_sha256=_sha256(image.tobytes()))
            res = clf.classify(image)
            _, raw = _raw_outputs(clf, res.probabilities[None])
            item.update(model_input=np.ascontiguousarray(res.model_input, dtype=np.uint8).tobytes().hex(),
                        raw=raw[0], label=res.best.label, score=round(res.best.score, 6))
        except Exception as e:  # one bad photo is a recorded finding, not the end of the run
            item["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        items.append(item)
    return {"status": "ok", "detail": f"{len(items)} images", "items": items}


def _write(out: str, result: dict, code: int) -> int:
    """Write the JSON atomically: a reader sees the whole file or none."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)
    return code


# ----------------------------------------------------------------------- compare

def _fmt(values) -> str:
    return "[" + " ".join(f"{v:3d}" if isinstance(v, int) else f"{v:.6g}" for v in values) + "]"


# TFLite's optimized int8/uint8 SOFTMAX uses another algorithm on aarch64
# (optimized_ops.h: `#if __aarch64__ && __clang__` defines
# TFLITE_SOFTMAX_USE_UINT16_LUT) than on x86, so a model ending in a
# quantized softmax may give outputs 1 step apart on a real Pi too. Only that
# is tolerated, and only for such a model: nothing before the softmax may differ.
SOFTMAX_NOTE = ("TFLite's int8 softmax uses a uint16 lookup table on aarch64 and another on x86 "
                "(TFLITE_SOFTMAX_USE_UINT16_LUT), a real Pi differs the same way")


def _one_step_allowed(host, pi, strict) -> bool:
    return (not strict and host["test_set"]["raw_dtype"] != "float32" and pi["machine"] == "aarch64"
            and "SOFTMAX" in (host["model"].get("ops") or []))


def _compare_test_set(host, pi, one_step_ok, say, failures, notes):
    a, b = host["test_set"], pi["test_set"]
    exact = a["raw_dtype"] != "float32"
    ops = host["model"].get("ops") or []
    identical, one_step, bad = 0, [], []
    for i, (ra, rb) in enumerate(zip(a["raw"], b["raw"])):
        diff = max(abs(x - y) for x, y in zip(ra, rb))
        if diff == 0:
            identical += 1
        elif exact and diff == 1 and one_step_ok or not exact and diff <= 1e-5:
            one_step.append(i)
        else:
            bad.append(i)
    flipped = [i for i, (x, y) in enumerate(zip(a["predicted"], b["predicted"])) if x != y]
    # A different top label is acceptable only where the host itself had the two within one step.
    real_flips = [i for i in flipped if not (one_step_ok and abs(a["raw"][i][a["predicted"][i]]
                                                                   - a["raw"][i][b["predicted"][i]]) <= 1)]
    n = a["count"]
    if bad or real_flips:
        failures.append(f"test set: {len(bad)} of {n} output rows differ, {len(real_flips)} labels differ")
        say(f"FAIL test set: {len(bad)} of {n} images give different {a['raw_dtype']} outputs"
            + (" (more than one step)" if one_step_ok else "") + f", {len(real_flips)} a different label")
        for i in (bad + [j for j in real_flips if j not in bad])[:10]:
            diff = max(abs(x - y) for x, y in zip(a["raw"][i], b["raw"][i]))
            say(f"  image {i:4d} (true {a['labels'][i]}): host {_fmt(a['raw'][i])} -> {a['predicted'][i]}")
            say(f"  {'':16}pi   {_fmt(b['raw'][i])} -> {b['predicted'][i]}  max |diff| {diff:g}")
        if len(bad) > 10:
            say(f"  ... and {len(bad) - 10} more")
        if exact and not one_step_ok and "SOFTMAX" in ops and pi["machine"] == "aarch64":
            say(f"  (strict: one-step softmax differences count too; {SOFTMAX_NOTE})")
        return
    what = "bit-identical" if exact else "within 1e-5"
    say(f"ok   test set: {n} Fashion-MNIST test images, {identical} {a['raw_dtype']} output rows {what}"
        + (f", {len(one_step)} one step apart" if one_step else "")
        + f"; same labels{' but ' + str(len(flipped)) + ' near-ties' if flipped else ''} "
        f"(accuracy {a['accuracy']:.3f} host, {b['accuracy']:.3f} pi)")
    if one_step:
        note = (f"{len(one_step)} of {n} test images: some output values one step apart "
                f"(images {', '.join(map(str, one_step[:8]))}{', ...' if len(one_step) > 8 else ''}); "
                + SOFTMAX_NOTE)
        notes.append(note)
        say(f"note {note}")
        for i in one_step[:3]:
            say(f"  image {i:4d}: host {_fmt(a['raw'][i])}")
            say(f"  {'':11}pi   {_fmt(b['raw'][i])}")


def _argmax(values) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # ties: the lower index, like top_k


def _compare_photos(items_a, items_b, scale, one_step_ok, strict, say, failures, notes):
    """Photos: decoding must agree exactly; the same 28x28 input must give the same
    output; a 28x28 input that came out differently must still give the same label."""
    by_key = {(it["kind"], it["name"]): it for it in items_b}
    counts = {"identical": 0, "one step": 0, "same label": 0, "near-tie": 0}
    large, shown = [], 0
    for ia in items_a:
        key = (ia["kind"], ia["name"])
        ib = by_key.pop(key, None)
        where = f"{ia['kind']} {ia['name']}"

        def fail(reason, *lines):
            failures.append(f"{where}: {reason}")
            say(f"FAIL {where}: {reason}")
            for line in lines:
                say("  " + line)

        if ib is None:
            fail("not classified on the Pi")
            continue
        if "error" in ia or "error" in ib:
            if ia.get("error") != ib.get("error"):
                fail(f"host {ia.get('error', 'ok')} / pi {ib.get('error', 'ok')}")
            continue
        if ia["image_sha256"] != ib["image_sha256"]:
            fail(f"decoded pixels differ ({ia['shape']} on the host, {ib['shape']} on the Pi)")
            continue
        xa, xb = bytes.fromhex(ia["model_input"]), bytes.fromhex(ib["model_input"])
        n_pixels = sum(p != q for p, q in zip(xa, xb))
        levels = max((abs(p - q) for p, q in zip(xa, xb)), default=0)
        step = max(abs(x - y) for x, y in zip(ia["raw"], ib["raw"]))
        la, lb = _argmax(ia["raw"]), _argmax(ib["raw"])
        outputs = (f"host {_fmt(ia['raw'])} {ia['label']}", f"pi   {_fmt(ib['raw'])} {ib['label']}")
        if n_pixels == 0:
            if step == 0:
                counts["identical"] += 1
            elif step == 1 and one_step_ok and (la == lb or abs(ia["raw"][la] - ia["raw"][lb]) <= 1):
                counts["one step"] += 1
            else:
                fail("same 28x28 model input, different output", *outputs)
            continue
        what = f"model input differs in {n_pixels} of {len(xa)} pixels, by up to {levels} grey levels"
        if n_pixels > LARGE_PREPROCESS_DIFF:
            large.append(ia["name"])
        margin = abs(ia["raw"][la] - ia["raw"][lb]) * scale
        if strict:
            fail(what + " (PI_STRICT)", *outputs)
        elif la != lb and margin > FLIP_MARGIN:
            fail(f"different label: {what}; the host was {margin:.2f} surer of {ia['label']!r}", *outputs)
        else:
            counts["same label" if la == lb else "near-tie"] += 1
            notes.append(f"{where}: {what}")
            if shown < 4:
                say(f"note {where}: {what}, "
                    + ("same label" if la == lb else f"labels {ia['label']!r}/{ib['label']!r}, a near-tie "
                                                     f"(host margin {margin:.2f})"))
            shown += 1
    for kind, name in by_key:
        failures.append(f"{kind} {name}: only on the Pi")
        say(f"FAIL {kind} {name}: classified only on the Pi")
    if shown > 4:
        say(f"note ... and {shown - 4} more photos whose model inputs differ")
    if large:
        note = (f"{len(large)} photos' model inputs differ by more than rounding (more than "
                f"{LARGE_PREPROCESS_DIFF} pixels: a segmentation or crop decision went the other way "
                f"on ARM): {', '.join(large[:4])}{', ...' if len(large) > 4 else ''}")
        notes.append(note)
        say(f"note {note}")
    n = len(items_a)
    kinds = ", ".join(f"{sum(it['kind'] == k for it in items_a)} {k}" for k in ("synthetic", "photo")
                      if any(it["kind"] == k for it in items_a))
    ok = not any(f.startswith(("synthetic ", "photo ")) for f in failures)
    say(f"{'ok  ' if ok else 'FAIL'} photos ({kinds}): {counts['identical']} of {n} identical end to end"
        + (f", {counts['one step']} with outputs one step apart" if counts["one step"] else "")
        + (f", {counts['same label']} with a different 28x28 input but the same label" if counts["same label"] else "")
        + (f", {counts['near-tie']} near-ties" if counts["near-tie"] else ""))


def _litert_probabilities(result) -> list:
    """The LiteRT test-set outputs as probabilities: raw integers dequantized with the model's
    own output scale and zero point, float outputs as they are."""
    ts, model = result["test_set"], result["model"]
    if ts["raw_dtype"] == "float32":
        return ts["raw"]
    scale, zero_point = model.get("output_scale") or 1.0, model.get("output_zero_point") or 0
    return [[(q - zero_point) * scale for q in row] for row in ts["raw"]]


def _agreement(a, b) -> tuple[int, float]:
    """(images with the same top-1, largest probability difference) of two probability tables. Pure."""
    same = sum(_argmax(x) == _argmax(y) for x, y in zip(a, b))
    diff = max((abs(p - q) for x, y in zip(a, b) for p, q in zip(x, y)), default=0.0)
    return same, diff


def _compare_peers(host, pi, say, notes) -> None:
    """ONNX Runtime on the emulated Pi against ONNX Runtime on the host and against LiteRT on the
    Pi, per ONNX model: top-1 agreement and the largest probability difference. Report only."""
    pa, pb = host.get("peers"), pi.get("peers")
    if pa is None and pb is None:
        return  # results from before the peers existed
    pa, pb = pa or {}, pb or {}
    if pa.get("status") != "ok" or pb.get("status") != "ok":
        note = f"peers (ONNX Runtime) not compared: host {pa.get('detail')}; pi {pb.get('detail')}"
        notes.append(note)
        say(f"note {note}")
        return
    litert = _litert_probabilities(pi)
    n = pi["test_set"]["count"]
    say(f"info peers: ONNX Runtime {pb.get('onnxruntime')} on the Pi, {pa.get('onnxruntime')} on the host, "
        f"{n} test images (agreement, not speed; never a failure)")
    for name in sorted(set(pa["models"]) | set(pb["models"])):
        a, b = pa["models"].get(name, {}), pb["models"].get(name, {})
        if a.get("status") != "ok" or b.get("status") != "ok":
            note = f"peer {name}: host {a.get('status', 'absent')} {a.get('detail', '')}".rstrip() + \
                   f"; pi {b.get('status', 'absent')} {b.get('detail', '')}".rstrip()
            notes.append(note)
            say(f"note {note}")
            continue
        same_host, diff_host = _agreement(b["probabilities"], a["probabilities"])
        same_litert, diff_litert = _agreement(b["probabilities"], litert)
        say(f"info   {name:22} pi vs host: top-1 {same_host}/{n}, max |diff| {diff_host:.2g}; "
            f"vs LiteRT on the Pi: top-1 {same_litert}/{n}, max |diff| {diff_litert:.2g}")


def compare(host: dict, pi: dict, out=sys.stdout, strict: bool = False) -> int:
    """Print what differs between the host's and the emulated run; 0 if nothing that matters does."""
    failures, notes = [], []

    def say(line=""):
        print(line, file=out)

    for name, r in (("host", host), ("pi", pi)):
        if r.get("schema") != SCHEMA:
            say(f"FAIL: {name} results are not {SCHEMA}")
            return 1
    say(f"{'':22} {'host':34} emulated Pi")
    rows = [("machine", host["machine"], pi["machine"]), ("python", host["python"], pi["python"])]
    for key in sorted(set(host["packages"]) | set(pi["packages"])):
        if not key.startswith("dist:"):
            rows.append((key, host["packages"].get(key), pi["packages"].get(key)))
    for key, a, b in rows:
        say(f"{key:22} {str(a):34} {b}")
    t_host, t_pi = host.get("timings", {}), pi.get("timings", {})
    say(f"{'seconds (total)':22} {str(t_host.get('total')):34} {t_pi.get('total')}  "
        "(emulation: says nothing about a real Pi's speed)")
    say()

    for check in pi.get("checks", []):
        say(f"{'ok  ' if check['ok'] else 'FAIL'} pi check {check['name']}: {check['detail']}")
        if not check["ok"]:
            failures.append(f"check {check['name']}")
    if "error" in pi or "error" in host:
        say(f"FAIL: run error: host {host.get('error')}, pi {pi.get('error')}")
        return 1
    if host["model"]["sha256"] != pi["model"]["sha256"]:
        failures.append("different model files")
    one_step_ok = _one_step_allowed(host, pi, strict)

    # 1. Test-set images: identical 28x28 inputs on both machines.
    a, b = host["test_set"], pi["test_set"]
    if a["images_sha256"] != b["images_sha256"] or a["count"] != b["count"]:
        failures.append("test images differ between the runs (different IDX files?)")
        say("FAIL test set: the two runs read different images")
    else:
        _compare_test_set(host, pi, one_step_ok, say, failures, notes)
        ra, rb = host.get("reference", {}), pi.get("reference", {})
        if ra.get("status") == "ok" and rb.get("status") == "ok":
            bad = [i for i, (x, y) in enumerate(zip(ra["raw"], rb["raw"])) if x != y]
            if bad or len(ra["raw"]) != len(rb["raw"]):
                failures.append(f"reference kernels: {len(bad)} of {len(ra['raw'])} output rows differ")
                say(f"FAIL reference kernels: {len(bad)} of {len(ra['raw'])} images give different outputs")
                for i in bad[:10]:
                    say(f"  image {i:4d}: host {_fmt(ra['raw'][i])}")
                    say(f"  {'':11}pi   {_fmt(rb['raw'][i])}")
            else:
                say(f"ok   reference kernels: {len(ra['raw'])} test images, outputs bit-identical")
        else:
            note = f"reference kernels not compared: host {ra.get('detail')}, pi {rb.get('detail')}"
            notes.append(note)
            say(f"note {note}")

    # 2. End to end through photo preprocessing.
    pa, pb = host.get("photos", {}), pi.get("photos", {})
    if pa.get("status") != "ok" or pb.get("status") != "ok":
        note = (f"photos not compared: host {pa.get('status')} ({pa.get('detail')}), "
                f"pi {pb.get('status')} ({pb.get('detail')})")
        if pa.get("status") != pb.get("status"):
            failures.append(note)
            say(f"FAIL {note}")
        else:
            notes.append(note)
            say(f"note {note}")
    else:
        quantized = host["test_set"]["raw_dtype"] != "float32"
        scale = (host["model"].get("output_scale") or 1.0) if quantized else 1.0  # output steps -> probability
        _compare_photos(pa["items"], pb["items"], scale, one_step_ok, strict, say, failures, notes)

    # 3. doctor.
    d = pi.get("doctor", {})
    if d.get("status") == "failed":
        failures.append("doctor")
        say(f"FAIL python -m edge_runtime doctor under emulation: {d.get('detail')}")
        for line in d.get("checks") or d.get("output", "").strip().splitlines()[-12:]:
            say("  " + line)
    elif d.get("status") == "ok":
        say(f"ok   python -m edge_runtime doctor under emulation: {d.get('detail')}")
    else:
        notes.append(f"doctor: {d.get('detail')}")
        say(f"note doctor: {d.get('detail')}")

    # 4. serve: starts, and answers /api/latest (results from before this step have none).
    sv = pi.get("serve")
    if sv is not None:
        if sv.get("status") == "failed":
            failures.append("serve")
            say(f"FAIL python -m edge_runtime serve under emulation: {sv.get('detail')}")
        elif sv.get("status") == "ok":
            say(f"ok   python -m edge_runtime serve under emulation: {sv.get('detail')}")
        else:
            notes.append(f"serve: {sv.get('detail')}")
            say(f"note serve: {sv.get('detail')}")

    # 5. peers: reported, never a failure (benchmark-only dependencies, not the device's).
    _compare_peers(host, pi, say, notes)

    say()
    if failures:
        more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
        say(f"pi-check FAILED ({pi['machine']}): {len(failures)} problem(s): " + "; ".join(failures[:3]) + more)
        return 1
    say(f"pi-check passed: {pi['machine']} under emulation matches {host['machine']}")
    return 0


# -------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="classify the fixed inputs and write raw outputs as JSON",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--model", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--count", type=int, default=200, help="how many test images (from the first)")
    r.add_argument("--data_dir", default=None, help="Fashion-MNIST IDX directory (default: the loader's search)")
    r.add_argument("--photos", default=None, help="a directory of real photos to classify too")
    r.add_argument("--photo_limit", type=int, default=0, help="at most this many of them, evenly spread (0: all)")
    r.add_argument("--threads", type=int, default=1, help="interpreter threads")
    r.add_argument("--batch_size", type=int, default=64, help="Classifier's batch size (1: never resize the input)")
    r.add_argument("--expect_machine", default=None, help="fail unless platform.machine() is this")
    r.add_argument("--forbid_tensorflow", action="store_true", help="fail if TensorFlow is importable")
    r.add_argument("--peers", default=None, help="a directory of ONNX models to run through ONNX Runtime too "
                                                 "(python -m tools.peers models): agreement only")
    r.add_argument("--peers_note", default=None, help="why the peers are not run (recorded and reported)")
    c = sub.add_parser("compare", help="compare the host's and the emulated run's JSON")
    c.add_argument("host")
    c.add_argument("pi")
    c.add_argument("--strict", action="store_true",
                   help="no tolerance at all, not even the aarch64 softmax's one step")
    args = parser.parse_args(argv)
    if args.command == "run":
        try:
            return run(args)
        except Exception as e:
            from edge_runtime.errors import EdgeError
            if not isinstance(e, EdgeError):
                raise  # a bug: keep the traceback
            print(f"pi_check: error: {e}", file=sys.stderr)
            return e.exit_code
    try:
        host, pi = (json.loads(Path(p).read_text()) for p in (args.host, args.pi))
    except (OSError, ValueError) as e:
        print(f"error: can't read results: {e}", file=sys.stderr)
        return 2
    return compare(host, pi, strict=args.strict)


if __name__ == "__main__":
    sys.exit(main())
