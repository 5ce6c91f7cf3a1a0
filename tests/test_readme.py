"""The README's results table agrees with the files it cites and describes the shipped
model (tools/readme_figures.py); the figure matching itself on small texts."""

from __future__ import annotations

import json

from tools import readme_figures as rf


def test_every_readme_figure_is_in_the_file_it_cites():
    problems = rf.check()
    assert problems == [], "\n".join(problems)


def test_figures_are_read_with_their_units_and_ranges():
    assert rf.figures_in("74.7%") == [rf.Figure(74.7, "%", 1)]
    assert rf.figures_in("-0.11 to +0.06 pp", ranges=True) == [rf.Figure(-0.11, "pp", 2), rf.Figure(0.06, "pp", 2)]
    assert rf.figures_in("| 13 | 15.4% |") == [rf.Figure(13.0, None, 0), rf.Figure(15.4, "%", 1)]  # not a range
    assert rf.figures_in("30 fps each") == [rf.Figure(30.0, "fps", 0)]
    assert rf.figures_in("1,234 MB and 8.3x") == [rf.Figure(1234.0, "MB", 0), rf.Figure(8.3, "x", 1)]
    assert rf.figures_in("75 µs") == [rf.Figure(75.0, "µs", 0)]


def test_a_figure_matches_at_the_readmes_precision_and_unit():
    candidates = rf.json_figures({"size_bytes": 365789, "int8_accuracy": 0.9394, "test_accuracy": 0.9395,
                                  "frame": {"median_us": 1184.2}, "train_seconds": 1014.0})
    assert rf.holds(rf.Figure(357.0, "KB", 0), candidates)  # 365789 / 1024 = 357.2
    assert not rf.holds(rf.Figure(358.0, "KB", 0), candidates)
    assert rf.holds(rf.Figure(93.94, "%", 2), candidates) and not rf.holds(rf.Figure(93.94, "pp", 2), candidates)
    assert rf.holds(rf.Figure(1.18, "ms", 2), candidates) and rf.holds(rf.Figure(16.9, "min", 1), candidates)
    assert rf.holds(rf.Figure(-0.01, "pp", 2), candidates)  # int8 against float of one object


def test_check_reports_a_wrong_figure_a_missing_file_and_a_stale_benchmark(tmp_path):
    (tmp_path / "edge_runtime" / "shipped").mkdir(parents=True)
    (tmp_path / rf.GATE).write_text(json.dumps({"int8_test_accuracy": 0.9394, "flatbuffer_sha256": "a" * 64}))
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "results.md").write_text("| int8 | 1.18 ms |\n")
    (tmp_path / "benchmarks" / "results.json").write_text(json.dumps({"rows": [{"name": "int8",
                                                                                "flatbuffer_sha256": "b" * 64}]}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{rf.SECTION}\n\n| | result | target | held in |\n|---|---:|---|---|\n"
                      f"| int8 accuracy | 93.94% | met | [gate.json]({rf.GATE}) |\n"
                      "| frame | 1.25 ms | met | [results.md](benchmarks/results.md) |\n"
                      "| photos | 74.7% | met | [gone.md](benchmarks/gone.md) |\n\n## Next\n")
    problems = rf.check(readme, tmp_path)
    assert len(problems) == 3, problems
    assert "'frame': 1.25 ms is not in benchmarks/results.md" in problems[0]
    assert "'photos'" in problems[1] and "benchmarks/gone.md not found" in problems[1]
    assert "benchmarks/results.json measured another model than the shipped one" in problems[2]
