"""`python -m tools.readme_figures`: does the README's results table say what its files say?

    python -m tools.readme_figures            # one line per problem; exit status 1 if any

Every row of the table under "## Results at a glance" links the committed
file(s) its figure is held in. Each number in a row's result cell (with its
unit: %, pp, KB, MB, ms, µs, min, fps, x) must be found in one of those files,
at the precision the README gives it:

- in Markdown, the same number and unit written there (357.2 KB holds 357 KB);
  a section about an earlier run ("## Change since the previous run") does not count;
- in JSON, a number whose key says its unit: `*accuracy` (a fraction: %),
  `*_bytes` (KB, MB), `*_us` (µs, ms), `*_mb` (MB), `*_minutes` (min),
  `*_seconds` (min), `*_pp` (pp); and the difference in pp between two
  accuracies of one object (int8 against float of a zoo model); an earlier
  run's figures (`previous`, `change_vs_previous`) do not count.

And the figures must describe the shipped model: where a cited results file
records which model it measured, that must be the one edge_runtime/shipped/
gate.json describes (the benchmark's int8 FlatBuffer SHA-256; the real-photo
evaluation's `unknown` threshold, the model's calibrated one). Pure functions
of the texts, so the test suite runs the same check (tests/test_readme.py).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## Results at a glance"
UNITS = ("%", "pp", "KB", "MB", "ms", "µs", "min", "fps", "x")
_NUMBER = re.compile(r"(?<![\w.])([+\-−]?\d[\d,]*(?:\.\d+)?)(?:\s?(%|pp|KB|MB|ms|µs|min|fps|x)(?![A-Za-z]))?")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# Results files that record which model they measured: path -> (what, how to read it
# from the file, the gate.json field it must equal).
MODEL_RECORDS = {
    "benchmarks/results.json": ("int8 FlatBuffer SHA-256", lambda d: next(
        (r.get("flatbuffer_sha256") for r in d.get("rows", []) if r.get("name") == "int8"), None),
        "flatbuffer_sha256"),
    "benchmarks/real_photos/results.json": ("unknown threshold", lambda d: d.get("threshold"), "unknown_threshold"),
}
GATE = "edge_runtime/shipped/gate.json"
EARLIER_RUN_KEYS = ("previous", "change_vs_previous")  # a results file's record of the run before it
_EARLIER_RUN_SECTION = re.compile(r"^## [^\n]*previous[^\n]*\n.*?(?=^#{1,2} |\Z)", re.M | re.S | re.I)


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str | None
    decimals: int

    def __str__(self) -> str:
        return f"{self.value:.{self.decimals}f}{' ' + self.unit if self.unit else ''}"


def figures_in(text: str, ranges: bool = False) -> list[Figure]:
    """Numbers with their units, as written. With `ranges` (a README cell such as
    "-0.11 to +0.06 pp") a number without a unit takes the next one's. Pure."""
    found = []
    for m in _NUMBER.finditer(text):
        number = m.group(1).replace(",", "").replace("−", "-")
        decimals = len(number.split(".")[1]) if "." in number else 0
        found.append(Figure(float(number), m.group(2), decimals))
    for i in range(len(found) - 2, -1, -1) if ranges else ():  # a range's first number takes the second's unit
        if found[i].unit is None and found[i + 1].unit is not None:
            found[i] = Figure(found[i].value, found[i + 1].unit, found[i].decimals)
    return found


def json_figures(data, key: str = "") -> list[tuple[float, str | None]]:
    """(value, unit) for each number in a JSON document, the unit read from its key. Pure."""
    out: list[tuple[float, str | None]] = []
    if isinstance(data, dict):
        accuracies = [v for k, v in data.items() if k.endswith("accuracy") and _is_number(v)]
        out += [((a - b) * 100, "pp") for a in accuracies for b in accuracies if a is not b]
        for k, v in data.items():
            if k not in EARLIER_RUN_KEYS:
                out += json_figures(v, k)
    elif isinstance(data, list):
        for v in data:
            out += json_figures(v, key)
    elif _is_number(data):
        v = float(data)
        out.append((v, None))
        if key.endswith("accuracy"):
            out.append((v * 100, "%"))
        elif key.endswith("_bytes"):
            out += [(v / 1024, "KB"), (v / 1024 ** 2, "MB")]
        elif key.endswith("_us"):
            out += [(v, "µs"), (v / 1000, "ms")]
        elif key.endswith("_mb"):
            out.append((v, "MB"))
        elif key.endswith("_minutes"):
            out.append((v, "min"))
        elif key.endswith("_seconds"):
            out.append((v / 60, "min"))
        elif key.endswith("_pp"):
            out.append((v, "pp"))
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def holds(figure: Figure, candidates: list[tuple[float, str | None]]) -> bool:
    """Is `figure` one of the candidates, rounded to the figure's precision? Pure."""
    return any(unit == figure.unit and round(value, figure.decimals) == round(figure.value, figure.decimals)
               for value, unit in candidates)


def results_rows(readme: str) -> list[list[str]]:
    """The cells of each row of the results table. Pure."""
    if SECTION not in readme:
        raise ValueError(f"README has no '{SECTION}' section")
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"^\|[\s|:-]*$", line):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]  # the first is the header


def file_candidates(path: Path) -> list[tuple[float, str | None]]:
    """Every figure a cited file holds, as (value, unit)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json_figures(json.loads(text))
    return [(f.value, f.unit) for f in figures_in(_EARLIER_RUN_SECTION.sub("", text))]


def check(readme_path: Path = README, root: Path = ROOT) -> list[str]:
    """Every disagreement between the README's results table and its files, one line each."""
    problems = []
    rows = results_rows(readme_path.read_text(encoding="utf-8"))
    if not rows:
        problems.append("the results table has no rows")
    cited_all = set()
    for cells in rows:
        what, result, cited = cells[0], cells[1], cells[-1]
        links = [link for link in _LINK.findall(cited) if not link.startswith("http")]
        paths = [(readme_path.parent / link).resolve() for link in links]
        cited_all.update(paths)
        missing = [str(p.relative_to(root)) for p in paths if not p.is_file()]
        if not paths or missing:
            problems.append(f"'{what}': links no committed file that holds {result!r}"
                            + (f" ({', '.join(missing)} not found)" if missing else ""))
            continue
        candidates = [c for p in paths for c in file_candidates(p)]
        for figure in figures_in(result, ranges=True):
            if not holds(figure, candidates):
                problems.append(f"'{what}': {figure} is not in {', '.join(links)}")
    gate_path = root / GATE
    gate = json.loads(gate_path.read_text()) if gate_path.is_file() else {}
    for name, (what, read, field) in MODEL_RECORDS.items():
        path = root / name
        if not any(p in cited_all for p in (path, path.with_suffix(".md"))) or not path.is_file():
            continue
        measured, shipped = read(json.loads(path.read_text())), gate.get(field)
        if measured != shipped:
            problems.append(f"{name} measured another model than the shipped one ({what} {str(measured)[:12]} "
                            f"against {str(shipped)[:12]}): rerun the command that writes it and update "
                            "the README's figures")
    return problems


def main(argv: list[str] | None = None) -> int:
    problems = check()
    for line in problems:
        print(f"README: {line}", file=sys.stderr)
    if not problems:
        print(f"README: every figure in the results table is in the file it cites ({README.name})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
