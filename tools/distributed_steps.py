"""`python -m tools.distributed_steps`: what --distribute multi_worker buys, measured
here and worked out for separate machines. Writes benchmarks/distributed.{json,md}.

    python -m tools.distributed_steps                  # the default model, about 5 minutes
    python -m tools.distributed_steps --epochs 2 --train_limit 6000 --out /tmp/steps   # a quick look

It trains the same short recipe (Fashion-MNIST only, --epochs epochs on
--train_limit images) four times with `python -m train`:

  1 process,  batch 128       the one-machine baseline
  2 workers,  global batch 128 on 127.0.0.1: MultiWorkerMirroredStrategy over gRPC,
                              the two processes sharing this machine's cores
  1 process,  batch 64 and 32 the compute one of 2 or 4 machines does per step

and reads each run's epoch seconds (history.json; the first epoch, which
traces the graph, is left out). A step's time on N separate machines is then
estimated on paper as compute(128/N) + all-reduce, the all-reduce moving
2(N-1)/N of the gradient's bytes over each machine's link (ring all-reduce).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime import atomic  # noqa: E402
from train import distribute  # noqa: E402

RUN_TIMEOUT = 1800  # s, per run
LINKS_GBIT = (1.0, 10.0)  # Ethernet speeds the estimate is given for


def train_args(args, out_dir: Path, name: str, batch: int) -> list[str]:
    return [sys.executable, "-m", "train", "--model", args.model, "--epochs", str(args.epochs),
            "--patience", str(args.epochs), "--train_limit", str(args.train_limit), "--val_size", "500",
            "--photo_dir", "", "--batch_size", str(batch), "--no_reports",
            "--out_dir", str(out_dir), "--name", name]


def run_processes(commands: list[list[str]], envs: list[dict], log_dir: Path, name: str) -> None:
    procs = []
    for i, (command, env) in enumerate(zip(commands, envs)):
        log = open(log_dir / f"{name}-{i}.log", "w")
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        statuses = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(statuses):
        sys.exit(f"error: {name} failed (status {statuses}); see {log_dir}/{name}-*.log")


def step_seconds(run_dir: Path) -> tuple[float, int]:
    """Median seconds per training step after the first epoch, and the step count."""
    history = json.loads((run_dir / "history.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = distribute.steps_per_epoch(config["train_limit"], config["batch_size"],
                                       distributed=metrics["distribute"]["strategy"] != "none")
    return statistics.median(h["seconds"] for h in history[1:]) / steps, steps


def estimate(compute_s: dict[int, float], gradient_bytes: int, machines: int, link_gbit: float) -> float:
    """Seconds per step of global batch 128 on `machines` separate machines. Pure."""
    per_machine_batch = 128 // machines
    ring_bytes = 2 * (machines - 1) / machines * gradient_bytes
    return compute_s[per_machine_batch] + ring_bytes * 8 / (link_gbit * 1e9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.distributed_steps", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="edge")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train_limit", type=int, default=24000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks"), help="where distributed.{json,md} go")
    args = parser.parse_args(argv)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory(prefix="distributed-steps-") as tmp:
        tmp = Path(tmp)
        runs = tmp / "runs"
        for batch in (128, 64, 32):
            print(f"1 process, batch {batch} ...", flush=True)
            run_processes([train_args(args, runs, f"one-{batch}", batch)], [env], tmp, f"one-{batch}")
        print("2 workers on 127.0.0.1, global batch 128 ...", flush=True)
        command = train_args(args, runs, "two-128", 128) + ["--distribute", "multi_worker"]
        run_processes([command] * 2, [{**env, "TF_CONFIG": c} for c in distribute.local_tf_configs(2)], tmp, "two-128")
        measured = {name: step_seconds(runs / name) for name in ("one-128", "one-64", "one-32", "two-128")}
        parameters = json.loads((runs / "one-128" / "metrics.json").read_text())["parameters"]

    gradient_bytes = 4 * parameters  # float32 gradients, whatever the training precision
    compute = {128: measured["one-128"][0], 64: measured["one-64"][0], 32: measured["one-32"][0]}
    results = {
        "model": args.model, "epochs": args.epochs, "train_limit": args.train_limit, "parameters": parameters,
        "gradient_bytes": gradient_bytes,
        "measured_step_seconds": {k: round(v[0], 5) for k, v in measured.items()},
        "steps_per_epoch": {k: v[1] for k, v in measured.items()},
        "estimated_step_seconds": {f"{n}_machines_{g:g}gbit": round(estimate(compute, gradient_bytes, n, g), 5)
                                   for n in (2, 4) for g in LINKS_GBIT},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "distributed.json", json.dumps(results, indent=2))
    atomic.write_text(out / "distributed.md", markdown(results, compute))
    print((out / "distributed.md").read_text())
    return 0


def markdown(r: dict, compute: dict[int, float]) -> str:
    ms = {k: v * 1000 for k, v in r["measured_step_seconds"].items()}
    base = ms["one-128"]
    lines = [
        "# Distributed training: step times",
        "",
        f"Generated by `python -m tools.distributed_steps` on {r['machine']['date']}, "
        f"{r['machine']['cpu_count']} cores ({r['machine']['platform']}). Model `{r['model']}`, "
        f"{r['parameters']:,} parameters, so {r['gradient_bytes'] / 1e6:.2f} MB of float32 gradient "
        f"per step; {r['train_limit']:,} Fashion-MNIST images, median of epochs 2-{r['epochs']}.",
        "",
        "## Measured on this machine",
        "",
        "| run | ms per step of 128 images | vs 1 process |",
        "|---|---|---|",
        f"| 1 process, batch 128 | {base:.1f} | 1.00x |",
        f"| 2 workers on 127.0.0.1, 64 each | {ms['two-128']:.1f} | {base / ms['two-128']:.2f}x |",
        "",
        "Both workers share this machine's cores, so they cannot be faster than one",
        "process; the difference is what the gradient exchange and the second",
        "process cost here.",
        "",
        "| 1 process | ms per step | images per second |",
        "|---|---|---|",
        *[f"| batch {b} | {compute[b] * 1000:.1f} | {b / compute[b]:,.0f} |" for b in (128, 64, 32)],
        "",
        "## Estimated on separate machines like this one",
        "",
        "A step of global batch 128 on N machines: each computes 128/N images (the",
        "batch-64 and batch-32 rows above), then a ring all-reduce sends and receives",
        f"2(N-1)/N x {r['gradient_bytes'] / 1e6:.2f} MB on each machine's link. Latency and",
        "the overlap of compute with communication are left out.",
        "",
        "| machines | link | ms per step | speed-up |",
        "|---|---|---|---|",
    ]
    for key, seconds in r["estimated_step_seconds"].items():
        n, link = key.split("_machines_")
        lines.append(f"| {n} | {link.replace('gbit', ' Gbit/s')} | {seconds * 1000:.1f} | {base / (seconds * 1000):.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
