"""The Keras half of `make bench`, run in its own process per thread count.

    python -m tools.bench_keras --model runs/latest/model.keras --threads 1 [--accuracy]

TensorFlow fixes its thread pools when it starts, so each thread count needs
a fresh process; running Keras apart also keeps TensorFlow's memory and
threads out of the process that times the TFLite runtime. Prints one line
`BENCH_KERAS {json}` on stdout with, for each way of calling the model:

- `predict`:  `model.predict(x[None])`, the way tutorials classify one image;
- `call`:     `model(x[None], training=False)`, the model called directly;
- `function`: the direct call compiled once with `tf.function` (a fixed
  input signature, so no retracing), usually the fastest Keras way;

single-image latency, batch throughput and end-to-end camera-frame latency
(the runtime's photo preprocessing + the call + top-k), plus parameters,
MACs, the process's peak memory and, with --accuracy, top-1 on the full test
set. Every way returns numpy probabilities, as a caller would need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

MARKER = "BENCH_KERAS "
WAYS = ("predict", "call", "function")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench_keras", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="a .keras model file")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow intra- and inter-op threads")
    p.add_argument("--ways", default=",".join(WAYS), help="comma-separated: predict, call, function")
    p.add_argument("--runs", type=int, default=200, help="timed single-image calls per way")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    p.add_argument("--frame_runs", type=int, default=100, help="timed camera frames per way")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--batch_images", type=int, default=4096, help="images per throughput measurement")
    p.add_argument("--batch_repeats", type=int, default=3)
    p.add_argument("--accuracy", action="store_true", help="also top-1 accuracy on the full test set")
    p.add_argument("--data_dir", default=None, help="Fashion-MNIST directory (default: $FASHION_MNIST_DIR, /usr/share/datasets/fashion-mnist, ~/.keras/datasets/fashion-mnist)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    unknown = set(ways) - set(WAYS)
    if unknown:
        raise SystemExit(f"unknown ways: {', '.join(sorted(unknown))}; choose from {', '.join(WAYS)}")
    import numpy as np

    from train.tensorflow_import import import_tensorflow
    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    from edge_runtime import bench
    from edge_runtime.memory import peak_rss_mb
    from edge_runtime.synthetic import synthetic_frame
    from edge_runtime.timing import latency_stats
    from edge_runtime.classifier import top_k
    from edge_runtime.contract import CLASS_NAMES
    from edge_runtime.photo import photo_to_input
    from train.models import count_macs

    model = keras.models.load_model(args.model)
    size = tuple(int(d) for d in model.inputs[0].shape[1:3])
    labels = list(CLASS_NAMES)
    frame = synthetic_frame()
    image = photo_to_input(frame, size)
    images = bench.batch_for_timing(args.batch_images, size)
    compiled = tf.function(lambda t: model(t, training=False), reduce_retracing=True,
                           input_signature=[tf.TensorSpec([None, *size, 1], tf.float32)])

    def as_input(x):  # uint8 (N, H, W) -> float32 (N, H, W, 1), raw pixels: the model scales itself
        return x[..., None].astype(np.float32)

    calls = {
        "predict": lambda x: model.predict(as_input(x), verbose=0),
        "call": lambda x: np.asarray(model(as_input(x), training=False)),
        "function": lambda x: compiled(tf.constant(as_input(x))).numpy(),
    }
    result = {"threads": args.threads, "ways": {}, "tensorflow": tf.__version__, "keras": keras.__version__,
              "parameters": int(model.count_params()), "macs_per_image": int(count_macs(model)),
              "size_bytes": os.path.getsize(args.model)}
    for way in ways:
        fn = calls[way]
        if way == "predict":
            batch_fn = lambda: model.predict(as_input(images), batch_size=args.batch_size, verbose=0)  # noqa: E731
        else:
            batch_fn = lambda fn=fn: [fn(images[i:i + args.batch_size])  # noqa: E731
                                      for i in range(0, len(images), args.batch_size)]
        result["ways"][way] = {
            "latency": latency_stats(lambda: fn(image[None]), args.runs, args.warmup),
            "batch": {"batch_size": args.batch_size, **bench.throughput(batch_fn, len(images), args.batch_repeats)},
            "frame": latency_stats(lambda: top_k(fn(photo_to_input(frame, size)[None])[0], labels, 3),
                                         args.frame_runs, max(1, args.warmup // 4)),
        }
    if args.accuracy:
        from edge_runtime import dataset
        data = dataset.load(args.data_dir)
        probs = model.predict(as_input(data.test_images), batch_size=512, verbose=0)
        result["accuracy"] = float((probs.argmax(1) == data.test_labels).mean())
        result["test_images"] = int(len(data.test_labels))
    result["peak_rss_mb"] = peak_rss_mb()  # the TensorFlow process, for contrast
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
