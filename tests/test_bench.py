"""The benchmark: its pure parts directly, and the real command as a smoke test
with a handful of iterations on the tiny trained and converted models.
Nothing here asserts a timing: only that figures exist, are positive and
are recorded where they should be."""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil

import numpy as np
import pytest

from edge_runtime import argtypes, deployed, memory, synthetic, timing
from edge_runtime import bench as rt
from edge_runtime.bench import BenchSettings
from conftest import ROOT
from tools import bench, cpu_peak

# -- statistics --------------------------------------------------------------------------


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert timing.percentile(values, 50) == 50
    assert timing.percentile(values, 95) == 95
    assert timing.percentile(values, 99) == 99
    assert timing.percentile(values, 100) == 100
    assert timing.percentile(values, 0) == 1
    assert timing.percentile(reversed(values), 95) == 95  # order of samples doesn't matter


def test_percentile_of_few_samples_is_an_observed_value():
    few = [3.0, 1.0, 2.0, 10.0, 4.0]
    assert timing.percentile(few, 95) == 10.0 and timing.percentile(few, 99) == 10.0  # the max, not an extrapolation
    assert timing.percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("samples, q", [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_rejects_nonsense(samples, q):
    with pytest.raises(ValueError):
        timing.percentile(samples, q)


def test_summarize():
    s = timing.summarize([4.0, 1.0, 3.0, 2.0])
    assert s["median_us"] == 2.5 and s["min_us"] == 1.0 and s["max_us"] == 4.0
    assert s["p95_us"] == 4.0 and s["p99_us"] == 4.0 and s["mean_us"] == 2.5 and s["runs"] == 4
    assert timing.summarize([5.0, 1.0, 9.0])["median_us"] == 5.0
    with pytest.raises(ValueError):
        timing.summarize([])


def test_latency_stats_warms_up_then_times_each_run():
    calls = []
    stats = timing.latency_stats(lambda: calls.append(1), runs=7, warmup=3)
    assert len(calls) == 10 and stats["runs"] == 7
    assert 0 < stats["min_us"] <= stats["median_us"] <= stats["p95_us"] <= stats["p99_us"] <= stats["max_us"]
    assert gc.isenabled()  # paused while timing only


def test_time_calls_restores_gc_after_an_error_and_rejects_zero_runs():
    def boom():
        raise RuntimeError("x")
    with pytest.raises(RuntimeError):
        timing.time_calls(boom, runs=2)
    assert gc.isenabled()
    with pytest.raises(ValueError):
        timing.time_calls(lambda: None, runs=0)


def test_throughput_counts_images_per_second():
    out = rt.throughput(lambda: sum(range(1000)), images=500, repeats=3)
    assert out["images"] == 500 and out["repeats"] == 3 and out["images_per_s"] > 0


def test_fmt_us():
    assert rt.fmt_us(None) == "-"
    assert rt.fmt_us(4.25) == "4.2 µs" or rt.fmt_us(4.25) == "4.3 µs"
    assert rt.fmt_us(47.2) == "47 µs"
    assert rt.fmt_us(1234.0) == "1.23 ms"
    assert rt.fmt_us(2.5e6) == "2.50 s"


def test_thread_list():
    assert argtypes.thread_list("1,2") == [1, 2]
    assert argtypes.thread_list("2, 1, 2") == [2, 1]
    for bad in ("0", "", "a", "1,-1", "100000"):  # 100000 threads crash the interpreter
        with pytest.raises(Exception):
            argtypes.thread_list(bad)


# -- the machine ---------------------------------------------------------------------------

X86 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse4_1 ssse3 avx avx2 avx512f avx512_vnni
processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
"""
PI4 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_parse_cpuinfo_x86_and_pi():
    x86 = rt.parse_cpuinfo(X86)
    assert x86["model"].startswith("Intel(R) Xeon(R) Gold 6338") and x86["mhz"] == 2000.0
    assert {"avx2", "avx512_vnni"} <= x86["flags"]
    pi = rt.parse_cpuinfo(PI4)
    assert pi["model"] == "Cortex-A72" and pi["board"] == "Raspberry Pi 4 Model B Rev 1.4" and "asimd" in pi["flags"]
    assert rt.parse_cpuinfo("")["model"] is None


def test_int8_peak_estimate_and_efficiency():
    vnni = cpu_peak.int8_peak({"avx2", "avx512_vnni"}, "x86_64", 2.0)
    assert vnni["isa"] == "AVX-512 VNNI" and vnni["gmacs_per_s_per_core"] == 128.0
    assert cpu_peak.int8_peak({"avx2"}, "x86_64", 3.0)["macs_per_cycle_per_core"] == 32
    pi = cpu_peak.int8_peak({"fp", "asimd"}, "aarch64", 1.8)
    assert pi["isa"] == "NEON" and pi["gmacs_per_s_per_core"] == pytest.approx(14.4)
    assert cpu_peak.int8_peak({"asimd", "asimddp"}, "aarch64", None)["gmacs_per_s_per_core"] is None
    assert cpu_peak.int8_peak(set(), "riscv64", 1.0) is None
    eff = cpu_peak.efficiency(1_000_000, 100.0, vnni)  # 1e6 MACs in 100 µs = 10 GMAC/s
    assert eff["achieved_gmacs_per_s"] == 10.0 and eff["fraction_of_peak"] == pytest.approx(10 / 128, abs=1e-4)
    assert "ESTIMATE" in eff["note"]
    assert cpu_peak.efficiency(1_000_000, 100.0, None)["fraction_of_peak"] is None
    assert cpu_peak.efficiency(None, 100.0, vnni) is None


def test_peak_verdict_never_reports_more_than_the_whole_peak():
    assert cpu_peak.peak_verdict(0.62) == "about 62% of peak"
    above = cpu_peak.peak_verdict(1.64)
    assert above.startswith("1.6x the estimated peak") and "%" not in above and "too low" in above


def test_synthetic_frame_is_deterministic_and_has_a_garment():
    a, b = synthetic.synthetic_frame(), synthetic.synthetic_frame()
    assert a.shape == (480, 640, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    x = rt.model_input_for_timing()
    assert x.shape == (28, 28) and x.dtype == np.uint8 and x.max() == 255 and (x == 0).mean() > 0.2


# -- accuracy provenance -----------------------------------------------------------------------

FACTS = {"variant": "int8", "flatbuffer_sha256": "a" * 64, "flatbuffer_bytes": 1000}
ROW = {"variant": "int8", "accuracy": 0.91, "size_bytes": 1000, "flatbuffer_sha256": "a" * 64}
REPORT = {"keras_sha256": "k" * 64, "variants": [{"variant": "keras", "accuracy": 0.915}, ROW]}


def test_report_accuracy_reused_only_for_the_measured_flatbuffer():
    assert bench.report_accuracy(FACTS, REPORT)[0] == 0.91
    assert bench.report_accuracy(FACTS, None) == (None, "no conversion report")
    other = {"variants": [{**ROW, "flatbuffer_sha256": "b" * 64}]}  # another conversion
    assert bench.report_accuracy(FACTS, other)[0] is None
    assert bench.report_accuracy({**FACTS, "variant": "float16"}, REPORT)[0] is None


def test_keras_accuracy_from_report_needs_the_same_keras_file():
    assert bench.keras_report_accuracy("k" * 64, REPORT)[0] == 0.915
    assert bench.keras_report_accuracy("x" * 64, REPORT)[0] is None
    assert bench.keras_report_accuracy("k" * 64, {**REPORT, "keras_sha256": None})[0] is None


# -- ratios, targets, previous run -------------------------------------------------------------

def _row(name, kind, median_1t, frame_1t=None, size=1000, memory=None, accuracy=None):
    return {"name": name, "kind": kind, "size_bytes": size, "accuracy": accuracy,
            "latency": {"1": {"median_us": median_1t, "p95_us": median_1t * 1.1}},
            "frame": {"1": {"median_us": frame_1t, "p95_us": frame_1t}} if frame_1t else {},
            "batch": {"1": {"images_per_s": 1e6 / median_1t}},
            "memory": {"peak_rss_mb": memory} if memory else None,
            "preprocess": {"median_us": frame_1t * 0.9} if frame_1t else None}


ROWS = [_row("keras_predict", "keras", 30000.0, size=5000, accuracy=0.9), _row("keras_call", "keras", 3000.0, size=5000, accuracy=0.9),
        _row("keras_function", "keras", 1000.0, size=5000, accuracy=0.9), _row("float32", "tflite", 100.0, size=2000),
        _row("int8", "tflite", 50.0, frame_1t=2500.0, size=500, memory=80.0, accuracy=0.895)]


def test_same_run_ratios_pick_the_fastest_keras_way():
    rows = [dict(r) for r in ROWS]
    ratios = bench.same_run_ratios(rows, [1])
    assert ratios["fastest_keras_way_1t"] == "keras_function"
    assert ratios["int8_speedup_vs_fastest_keras_1t"] == 20.0
    assert ratios["int8_speedup_vs_keras_predict_1t"] == 600.0
    assert ratios["int8_speedup_vs_float32_1t"] == 2.0
    assert ratios["int8_size_vs_float32"] == 0.25 and ratios["int8_size_vs_keras_file"] == 0.1
    assert ratios["int8_accuracy_change_pp_vs_keras"] == -0.5
    assert ratios["frame_preprocessing_share_int8_1t"] == 0.9
    assert rows[-1]["speedup_vs_fastest_keras"]["1"] == 20.0
    assert bench.same_run_ratios([dict(r) for r in ROWS[3:]], [1])["int8_speedup_vs_fastest_keras_1t"] is None


def test_check_target_says_met_or_missed_and_by_how_much():
    met = bench.check_target("latency", 47.0, "<=", 100.0, "µs")
    assert met["met"] is True and met["margin"] == 0.53 and met["verdict"].startswith("met")
    missed = bench.check_target("latency", 150.0, "<=", 100.0, "µs")
    assert missed["met"] is False and missed["value_over_limit"] == 1.5 and "1.50x the limit" in missed["verdict"]
    assert bench.check_target("speed-up", 12.0, ">=", 10.0, "x")["met"] is True
    slow = bench.check_target("speed-up", 5.0, ">=", 10.0, "x")
    assert slow["met"] is False and "50% of the target" in slow["verdict"]
    assert bench.check_target("memory", None, "<=", 150.0, "MB")["met"] is None
    with pytest.raises(ValueError):
        bench.check_target("x", 1.0, "=", 2.0, "x")
    # strict: "faster than" is not met by a tie
    tie = bench.check_target("int8 faster", 1.0, ">", 1.0, "x")
    assert tie["met"] is False and tie["verdict"].startswith("MISSED: 1.00x <= 1.00x")
    assert bench.check_target("int8 faster", 1.2, ">", 1.0, "x")["met"] is True
    assert bench.check_target("x", 0.99, "<", 1.0, "x")["met"] is True
    assert bench.check_target("x", 1.0, "<", 1.0, "x")["verdict"].startswith("MISSED: 1.00x >= 1.00x")


PEAK = {"gmacs_per_s": 400.0, "best": "conv.dynamic", "per_mode": {"int8": {"gmacs_per_s": 250.0, "layer": "conv"},
                                                                    "dynamic": {"gmacs_per_s": 400.0, "layer": "conv"}}}


def test_targets_use_the_one_thread_int8_figures():
    rows = [dict(r) for r in ROWS] + [_row("dynamic", "tflite", 40.0)]
    rows[4] = {**rows[4], "macs_per_image": 10_000_000, "invoke": {"1": {"median_us": 45.0}}}
    found = {t["key"]: t for t in bench.targets(rows, bench.same_run_ratios(rows, [1]), PEAK)}
    assert found["int8_latency"]["value"] == 50.0 and found["int8_latency"]["met"]
    assert found["frame_latency"]["value"] == 2500.0 and found["frame_latency"]["met"] is False  # limit 2 ms
    assert found["frame_latency_build"]["value"] == 2500.0 and found["frame_latency_build"]["limit"] == 1000.0
    assert found["int8_speedup"]["value"] == 20.0 and found["int8_speedup"]["met"]
    assert found["runtime_memory"]["value"] == 80.0 and found["runtime_memory"]["met"]
    # 10 M MACs at 400 GMAC/s take 25 µs; the image took 50 µs: 2x the peak time, limit 1.5x
    assert found["int8_vs_peak"]["value"] == 2.0 and found["int8_vs_peak"]["met"] is False
    # dynamic (40 µs) is faster than float32 (100 µs) and than int8 (50 µs): 40 / 50
    assert found["int8_fastest_tflite"]["value"] == 0.8 and found["int8_fastest_tflite"]["met"] is False
    no_peak = {t["key"]: t for t in bench.targets(rows, bench.same_run_ratios(rows, [1]))}
    assert no_peak["int8_vs_peak"]["met"] is None and no_peak["int8_vs_peak"]["verdict"] == "not measured"
    assert no_peak["int8_vs_peers"]["met"] is None  # no peers run
    # the fastest peer took 1.49x LiteRT int8's time at 1 thread: met; 0.9x: missed
    for ratio, met in ((1.49, True), (0.9, False)):
        peers = {"verdict": {"per_thread": {"1": {"fastest_peer_vs_reference": ratio}}}}
        found = {t["key"]: t for t in bench.targets(rows, bench.same_run_ratios(rows, [1]), PEAK, peers)}
        assert found["int8_vs_peers"]["value"] == ratio and found["int8_vs_peers"]["met"] is met


def test_int8_against_the_measured_peak():
    rows = [dict(r) for r in ROWS]
    rows[4] = {**rows[4], "macs_per_image": 10_000_000, "invoke": {"1": {"median_us": 45.0}}}
    vs = bench.int8_against_peak(rows, PEAK)
    assert vs["peak_time_us"] == 25.0 and vs["times_peak_time"] == 2.0 and vs["achieved_gmacs_per_s"] == 200.0
    assert vs["invoke_us"] == 45.0 and vs["invoke_times_peak_time"] == 1.8
    assert vs["full_int8_kernels_gmacs_per_s"] == 250.0 and vs["times_full_int8_kernels_peak_time"] == 1.25  # 40 µs
    assert bench.int8_against_peak(rows, None) is None
    assert bench.int8_against_peak(rows[:4], PEAK) is None


def test_measured_peak_summary_and_layer_macs():
    assert cpu_peak.layer_macs("CONV_2D", (14, 64, 64)) == 14 * 14 * 64 * 9 * 64
    assert cpu_peak.layer_macs("FULLY_CONNECTED", (256, 1024, 512)) == 256 * 1024 * 512
    with pytest.raises(ValueError):
        cpu_peak.layer_macs("SOFTMAX", (1, 2, 3))
    rows = [{"layer": "a", "mode": "int8", "gmacs_per_s": 250.0}, {"layer": "b", "mode": "int8", "gmacs_per_s": 270.0},
            {"layer": "a", "mode": "dynamic", "gmacs_per_s": 390.0}, {"layer": "b", "mode": "dynamic", "gmacs_per_s": 350.0}]
    peak = cpu_peak.summarize_peak(rows, threads=1)
    assert peak["gmacs_per_s"] == 390.0 and peak["best"] == "a.dynamic" and "MEASURED" in peak["note"]
    assert peak["per_mode"] == {"int8": {"gmacs_per_s": 270.0, "layer": "b"}, "dynamic": {"gmacs_per_s": 390.0, "layer": "a"}}
    with pytest.raises(ValueError):
        cpu_peak.summarize_peak([], threads=1)
    assert cpu_peak.against_measured_peak(None, 10.0, peak) is None
    assert cpu_peak.against_measured_peak(3_900_000, 20.0, peak)["times_peak_time"] == 2.0  # 10 µs at the peak
    every = {(name, mode) for name, _, _ in cpu_peak.PEAK_LAYERS for mode in cpu_peak.PEAK_MODES}
    assert len({cpu_peak.peak_model_file(n, m) for n, m in every}) == len(every)  # one cache file each


def test_where_the_time_goes_section():
    int8_rows = [{"index": 0, "op": "CONV_2D", "shape": "c", "us": 30.0, "share": 0.6, "macs": 1, "gmacs_per_s": 240.0},
                 {"index": 1, "op": "QUANTIZE", "shape": "q", "us": 1.0, "share": 0.02, "macs": 0, "gmacs_per_s": None}]
    results = {"rows": [_row("int8", "tflite", 50.0, frame_1t=1000.0)], "machine": {},
               "measured_peak": {**PEAK, "layers": [{}] * 12},
               "int8_vs_peak": {"times_peak_time": 2.0, "macs": 10_000_000, "peak_time_us": 25.0, "peak_gmacs_per_s": 400.0,
                                "latency_us": 50.0, "invoke_us": 45.0, "invoke_times_peak_time": 1.8,
                                "achieved_gmacs_per_s": 200.0},
               "op_profile": {"int8": {"invoke_us": 50.0, "ops": int8_rows},
                              "dynamic": {"invoke_us": 40.0, "ops": [{**int8_rows[0], "us": 22.0}]}},
               "frame_profile": {"steps": {"decode": 400.0, "resize": 100.0}, "total_us": 520.0}}
    text = "\n".join(bench.where_the_time_goes(results))
    assert "**400 GMAC/s**" in text and "full-int8 kernels' plateau 250" in text
    assert "int8 = **2.00x the measured-peak time**" in text
    assert "| CONV_2D | c | 30.0 | 60% | 240 | 22.0 |" in text and "| QUANTIZE | q | 1.0 | 2% | - | - |" in text
    assert "| decode | 400 µs | 40% |" in text and "| `photo_to_input` as one call | 520 µs | 52% |" in text
    bare = "\n".join(bench.where_the_time_goes({"rows": [], "measured_peak": None, "measured_peak_error": "no TF",
                                                 "frame_profile_error": "not measured (x)"}))
    assert "not measured (no TF)" in bare and "not measured (x)" in bare


def test_frame_steps_from_the_frame_helper_when_present():
    found, why = bench.frame_steps((28, 28))
    if found is None:  # helper "frame"'s tools/frame_profile.py is not there
        assert "tools.frame_profile" in why
    else:
        assert why is None and found["steps"] and all(isinstance(v, float) and v > 0 for v in found["steps"].values())
    nested = bench.frame_steps_of({"steps": {"a": 1, "b": 2.5}, "sum_us": 3.5, "total_us": 4.0, "runs": 3})
    assert nested == {"steps": {"a": 1.0, "b": 2.5}, "total_us": 4.0}
    assert bench.frame_steps_of({"a": 1.0}) == {"steps": {"a": 1.0}, "total_us": None}


def test_compare_runs_directions():
    prev = {"int8.latency_1t.median_us": 50.0, "int8.accuracy": 0.90, "int8.batch_1t.images_per_s": 1000.0,
            "int8.memory_mb": 80.0, "ratios.int8_speedup_vs_fastest_keras_1t": 20.0, "gone": 1.0}
    cur = {"int8.latency_1t.median_us": 100.0, "int8.accuracy": 0.901, "int8.batch_1t.images_per_s": 2000.0,
           "int8.memory_mb": 60.0, "ratios.int8_speedup_vs_fastest_keras_1t": 10.0, "new": 1.0}
    c = bench.compare_runs(cur, prev)
    assert set(c) == set(prev) - {"gone"}
    assert c["int8.latency_1t.median_us"]["ratio"] == 2.0 and c["int8.latency_1t.median_us"]["verdict"] == "worse"
    assert c["int8.accuracy"]["verdict"] == "same"
    assert c["int8.batch_1t.images_per_s"]["verdict"] == "better"
    assert c["int8.memory_mb"]["verdict"] == "better"
    assert c["ratios.int8_speedup_vs_fastest_keras_1t"]["verdict"] == "worse"


def test_previous_block_keeps_figures_not_history():
    old = {"schema": bench.SCHEMA, "created": "2025-01-01", "command": "x", "quick": False,
           "machine": {"cpu": "Old CPU"}, "rows": [dict(r) for r in ROWS], "ratios": {"a": 2.0, "b": "text"},
           "previous": {"figures": {"ancient": 1.0}}}
    block = bench.previous_block(old)
    assert block["created"] == "2025-01-01" and "Old CPU" in block["machine"]
    assert block["figures"]["int8.latency_1t.median_us"] == 50.0 and block["figures"]["ratios.a"] == 2.0
    assert "ratios.b" not in block["figures"] and "ancient" not in json.dumps(block)
    assert bench.previous_block({"schema": "something else"}) is None and bench.previous_block(None) is None


def test_settings_from_flags_explicit_counts_win_over_quick():
    parser = argparse.ArgumentParser()
    rt.configure(parser)
    quick = BenchSettings.from_args(parser.parse_args(["--quick", "--runs", "7", "--threads", "2,1"]))
    assert quick.quick and quick.runs == 7 and quick.threads == (2, 1)
    assert quick.warmup == rt.ITERATIONS["warmup"][1] and quick.frame_runs == rt.ITERATIONS["frame_runs"][1]
    full = BenchSettings.from_args(parser.parse_args([]), memory=False)
    assert full == BenchSettings(memory=False)
    assert full.to_dict()["threads"] == [1, 2]


def test_the_device_command_carries_no_workstation_code():
    """The ISA peak estimate and its memory child's entry point are not part of `edge_runtime bench`."""
    source = (ROOT / "edge_runtime" / "bench.py").read_text()
    for name in ("int8_peak", "peak_verdict", "efficiency", "memory_probe", "help=argparse.SUPPRESS"):
        assert name not in source, name
    parser = argparse.ArgumentParser()
    rt.configure(parser)
    assert "memory_probe" not in parser.format_help()


# -- real runs (tiny models, a handful of iterations) -----------------------------------------

def test_memory_probe_is_a_runtime_only_process(tiny_int8_model):
    probe = memory.measure_memory(tiny_int8_model, threads=1, runs=2)
    assert probe["peak_rss_mb"] > 0
    assert probe["tensorflow_imported"] is False
    stages = probe["stages_mb"]
    assert 0 < stages["python"] <= stages["imports"] <= stages["model_loaded"] <= stages["classified"]
    assert probe["pid"] != os.getpid()


def test_missing_model_and_directories_named_like_models(tiny_int8_model, tmp_path, capsys):
    from edge_runtime.cli import main
    assert main(["bench", "--model", str(tmp_path / "missing.tflite"), "--quick", "--no_memory"]) == 4
    assert "error: model " in capsys.readouterr().err  # the one line `info` gives, not a traceback
    (tmp_path / "sub.tflite").mkdir()
    shutil.copy(tiny_int8_model, tmp_path / "fashion_mnist_int8.tflite")
    assert rt.models_to_bench([tmp_path]) == [tmp_path / "fashion_mnist_int8.tflite"]


def test_device_bench_command_json(tiny_int8_model, capsys):
    from edge_runtime.cli import main
    code = main(["bench", "--model", str(tiny_int8_model), "--quick", "--threads", "1", "--no_memory", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["models"]
    assert row["variant"] == "int8" and row["hash_matches_metadata"] and 0 < row["accuracy"] <= 1
    assert row["latency"]["1"]["median_us"] > 0 and row["frame"]["1"]["median_us"] > 0
    assert row["batch"]["1"]["images_per_s"] > 0 and out["quick"] is True
    assert out["machine"]["interpreter"]["package"] and out["machine"]["cores"] >= 1


def test_device_bench_command_table(tiny_models, capsys):
    from edge_runtime.cli import main
    out_dir, _ = tiny_models
    assert main(["bench", "--model", str(out_dir), "--quick", "--threads", "1", "--no_memory"]) == 0
    text = capsys.readouterr().out
    for variant in deployed.VARIANTS:
        assert variant in text
    assert "not meaningful" in text


@pytest.mark.slow
def test_bench_smoke_then_previous_run_and_recomputed_accuracy(tiny_run, tiny_models, tmp_path, capsys):
    models_dir, report = tiny_models
    out = tmp_path / "bench"
    assert bench.main(["--run_dir", str(tiny_run), "--models_dir", str(models_dir), "--out_dir", str(out),
                       "--quick"]) == 0
    first = json.loads((out / "results.json").read_text())
    assert first["schema"] == bench.SCHEMA and first["quick"] is True and first["previous"] is None
    names = [r["name"] for r in first["rows"]]
    assert names == ["keras_predict", "keras_call", "keras_function", "float32", "float16", "dynamic", "int8"]
    reported = {r["variant"]: r["accuracy"] for r in report["variants"]}
    for r in first["rows"]:
        assert r["size_bytes"] > 0 and r["parameters"] > 0 and r["macs_per_image"] > 0
        assert r["memory"]["peak_rss_mb"] > 0
        for t in ("1", "2"):
            for what in ("latency", "frame"):
                s = r[what][t]
                assert 0 < s["median_us"] <= s["p95_us"] <= s["p99_us"]
            assert r["batch"][t]["images_per_s"] > 0
        # hashes match: every accuracy is the conversion report's own
        assert r["accuracy"] == reported["keras" if r["kind"] == "keras" else r["name"]]
        assert r["accuracy_source"].startswith("conversion report"), r["accuracy_source"]
        if r["kind"] == "tflite":
            assert r["memory"]["tensorflow_imported"] is False and r["hash_matches_metadata"]
    assert first["ratios"]["int8_speedup_vs_fastest_keras_1t"] > 0
    assert {t["key"] for t in first["targets"]} == {"int8_latency", "frame_latency", "frame_latency_build",
                                                    "int8_speedup", "runtime_memory", "int8_vs_peak",
                                                    "int8_fastest_tflite", "int8_vs_peers"}
    assert all(t["value"] is not None and t["met"] in (True, False) for t in first["targets"])
    peers_file = json.loads((out / "peers.json").read_text())  # the same model through the peer runtimes
    assert peers_file["verdict"] == first["peers"] and (out / "peers.md").is_file()
    peak = first["measured_peak"]
    assert peak["gmacs_per_s"] > 0 and len(peak["layers"]) == len(cpu_peak.PEAK_LAYERS) * len(cpu_peak.PEAK_MODES)
    assert first["int8_vs_peak"]["times_peak_time"] > 0
    assert set(first["op_profile"]) == {"int8", "dynamic", "float32"}
    for p in first["op_profile"].values():
        assert sum(r["macs"] for r in p["ops"]) == p["macs"] == first["rows"][-1]["macs_per_image"]
    profile_file = json.loads((out / "op_profile.json").read_text())
    assert [p["variant"] for p in profile_file["profiles"]] == ["int8", "dynamic", "float32"]
    assert "## Where the time goes" in (out / "results.md").read_text()
    assert first["machine"]["cpu"] and first["machine"]["interpreter"]["version"]
    md = (out / "results.md").read_text()
    assert "## Targets" in md and "TFLite int8" in md and "--quick run" in md
    assert (out / "latency.png").stat().st_size > 1000
    assert not [p.name for p in out.iterdir() if ".partial-" in p.name]

    # Second run on a copy whose int8 and float32 report rows name other FlatBuffers:
    # those two accuracies must be recomputed, dynamic's still reused; the first run becomes "previous".
    tampered = tmp_path / "models"
    shutil.copytree(models_dir, tampered)
    report_file = tampered / "conversion_report.json"
    changed = json.loads(report_file.read_text())
    for row in changed["variants"]:
        if row["variant"] in ("int8", "float32"):
            row["flatbuffer_sha256"] = "0" * 64
    report_file.write_text(json.dumps(changed))
    assert bench.main(["--run_dir", str(tiny_run), "--models_dir", str(tampered), "--out_dir", str(out), "--quick",
                       "--keras_ways", "none", "--threads", "1", "--variants", "float32,dynamic,int8",
                       "--no_peak", "--no_op_profile", "--no-peers"]) == 0
    second = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in second["rows"]}
    assert set(rows) == {"float32", "dynamic", "int8"}
    for name in ("float32", "int8"):
        assert rows[name]["accuracy_source"].startswith("evaluated now"), rows[name]["accuracy_source"]
        assert rows[name]["accuracy"] == pytest.approx(reported[name], abs=0.003)  # same network, same test set
    assert rows["dynamic"]["accuracy_source"].startswith("conversion report")
    prev = second["previous"]
    assert prev["created"] == first["created"] and prev["quick"] is True
    assert prev["figures"]["int8.latency_1t.median_us"] == first["rows"][-1]["latency"]["1"]["median_us"]
    assert "keras_predict.latency_1t.median_us" in prev["figures"]  # kept even though not re-measured
    change = second["change_vs_previous"]["int8.latency_1t.median_us"]
    assert change["ratio"] == pytest.approx(change["current"] / change["previous"], rel=1e-3)
    assert set(prev) == {"created", "command", "quick", "machine", "figures"}  # one level of history, no chain
    assert "Change since the previous run" in (out / "results.md").read_text()
    targets = {t["key"]: t for t in second["targets"]}
    assert targets["int8_speedup"]["met"] is None  # no Keras rows this time: not measured, not failed
    assert targets["int8_vs_peak"]["met"] is None and second.get("measured_peak") is None  # --no_peak
    assert not second.get("op_profile")
    assert targets["int8_vs_peers"]["met"] is None and "peers" not in second  # --no-peers


@pytest.mark.slow
def test_peak_models_are_built_once_and_a_damaged_one_again(tmp_path):
    """The TensorFlow child builds what is missing; a damaged cached model is rebuilt, the others kept."""
    cache = tmp_path / "int8_peak"
    paths = cpu_peak.ensure_peak_models(cache, modes=("int8",))
    assert set(paths) == {(name, "int8") for name, _, _ in cpu_peak.PEAK_LAYERS}
    for (name, _), path in paths.items():
        op = dict((n, o) for n, o, _ in cpu_peak.PEAK_LAYERS)[name]
        assert cpu_peak._usable(path, op)
    damaged, *kept = paths.values()
    before = {p: p.stat().st_mtime_ns for p in kept}
    damaged.write_bytes(damaged.read_bytes()[:500])
    again = cpu_peak.ensure_peak_models(cache, modes=("int8",))
    assert again == paths and damaged.stat().st_size > 500
    assert {p: p.stat().st_mtime_ns for p in kept} == before  # not rebuilt
    rows = cpu_peak.time_peak_models({k: v for k, v in paths.items() if k[0] == "conv_14x14x64_to_64"}, quick=True)
    (row,) = rows
    assert row["macs"] == 14 * 14 * 64 * 9 * 64 and row["gmacs_per_s"] > 0 and row["median_us"] > 0
