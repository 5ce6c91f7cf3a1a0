"""`python -m tools.pi_bundle` (make pi-bundle): dist/fashion-edge-pi.tar.gz for a Raspberry Pi.

    python -m tools.pi_bundle                       # models/ after `make convert`, else the shipped model
    python -m tools.pi_bundle --model other.tflite --output /tmp/pi.tar.gz

The archive unpacks into fashion-edge-pi/:

    edge_runtime/               the runtime's source and its pyproject.toml (pip install ./edge_runtime)
    models/fashion_mnist_int8.tflite (+ .json)   the model, under the name the runtime looks for
    install.sh, run             install into .venv; run a command with it (deploy/)
    requirements-device*.txt    packages per architecture (deploy/)
    fashion-edge-webcam.service systemd unit template: headless webcam at boot (deploy/)
    fashion-edge-serve.service  systemd unit template: the web view at boot (deploy/)
    README.md, BUILD.json       how to use it; model checksum, git commit, date

Only the standard library and edge_runtime.metadata (no TensorFlow, no
OpenCV). The archive is written to a temporary file and renamed, so a
half-written bundle never exists under the final name.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python tools/pi_bundle.py` works too

from edge_runtime import atomic, process  # noqa: E402
from edge_runtime.argtypes import HelpFormatter  # noqa: E402
from edge_runtime.errors import ModelError  # noqa: E402
from edge_runtime.deployed import FROM_FLAG, FROM_SHIPPED, MODEL_FILENAME, MODELS_DIR, SHIPPED_MODEL  # noqa: E402
from edge_runtime.metadata import read_metadata, sha256, sidecar_path  # noqa: E402

PREFIX = "fashion-edge-pi"
DEFAULT_OUTPUT = ROOT / "dist" / "fashion-edge-pi.tar.gz"
# deploy/ file -> mode in the archive
DEPLOY = {"install.sh": 0o755, "run": 0o755, "requirements-device.txt": 0o644,
          "requirements-device-armv7l.txt": 0o644, "fashion-edge-webcam.service": 0o644,
          "fashion-edge-serve.service": 0o644, "README.md": 0o644}


def default_model(root: Path = ROOT) -> tuple[Path, str]:
    """(model to bundle, where it came from): models/ after `make convert`, else the shipped model."""
    converted = root / MODELS_DIR / MODEL_FILENAME
    if converted.is_file():
        return converted, f"{MODELS_DIR}/ (make convert)"
    return root / SHIPPED_MODEL.relative_to(ROOT), FROM_SHIPPED


def runtime_files(root: Path = ROOT) -> list[Path]:
    """The runtime package: *.py, its subpackages' (edge_runtime/serve/), pyproject.toml and the
    shipped model's files (edge_runtime/shipped/), no caches."""
    package = root / "edge_runtime"
    shipped = package / SHIPPED_MODEL.parent.name
    folders = [package, *(d for d in sorted(package.iterdir()) if (d / "__init__.py").is_file())]
    return sorted([p for folder in folders for p in folder.iterdir() if p.is_file() and p.suffix in (".py", ".toml")]
                  + [p for p in (shipped.iterdir() if shipped.is_dir() else []) if p.suffix in (".tflite", ".json")])


def git_commit(root: Path = ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def bundle_contents(model: Path, root: Path = ROOT, source: str = FROM_FLAG) -> dict[str, tuple[bytes, int]]:
    """{path inside the archive: (bytes, mode)}. Raises ModelError for a missing or unusable model."""
    if not model.is_file():
        raise ModelError(f"no model to bundle at {model}: run `make train convert` first, or pass --model PATH")
    metadata = read_metadata(model)  # ModelError if it has none, or the wrong kind
    model_bytes = model.read_bytes()
    sidecar = sidecar_path(model)
    sidecar_bytes = sidecar.read_bytes() if sidecar.is_file() else json.dumps(metadata, indent=2).encode()
    files = {f"edge_runtime/{p.relative_to(root / 'edge_runtime').as_posix()}": (p.read_bytes(), 0o644)
             for p in runtime_files(root)}
    files[f"{MODELS_DIR}/{MODEL_FILENAME}"] = (model_bytes, 0o644)
    files[f"{MODELS_DIR}/{Path(MODEL_FILENAME).with_suffix('.json')}"] = (sidecar_bytes, 0o644)
    for name, mode in DEPLOY.items():
        files[name] = ((root / "deploy" / name).read_bytes(), mode)
    build = {
        "model": {"source": str(model), "from": source, "sha256": sha256(model_bytes),
                  "variant": metadata.get("variant"), "labels": metadata["labels"],
                  "accuracy": (metadata.get("accuracy") or {}).get("accuracy")},
        "git_commit": git_commit(root),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    files["BUILD.json"] = (json.dumps(build, indent=2).encode(), 0o644)
    return files


def write_tarball(files: dict[str, tuple[bytes, int]], output: Path) -> None:
    """A .tar.gz of `files` under PREFIX/, written atomically; owner root, sorted, one timestamp."""
    now = int(time.time())
    with atomic.atomic_path(output) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in sorted(files):
                data, mode = files[name]
                info = tarfile.TarInfo(f"{PREFIX}/{name}")
                info.size, info.mode, info.mtime = len(data), mode, now
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                tar.addfile(info, io.BytesIO(data))


def build(model: Path | None = None, output: Path = DEFAULT_OUTPUT, root: Path = ROOT) -> Path:
    """The bundle at `output`, with `model` (default: models/, else the shipped model)."""
    model, source = (model, FROM_FLAG) if model is not None else default_model(root)
    write_tarball(bundle_contents(model, root, source), output)
    return output


@process.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pi_bundle", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help=f"the .tflite model to bundle (default: {MODELS_DIR}/{MODEL_FILENAME} after "
                             "`make convert`, else the model shipped in edge_runtime/shipped/)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the .tar.gz goes")
    args = parser.parse_args(argv)
    output = build(args.model, args.output)
    size = output.stat().st_size / 2**20
    print(f"{output} ({size:.1f} MB). On the Pi:\n"
          f"  scp {output} pi@raspberrypi.local:\n"
          f"  ssh pi@raspberrypi.local 'tar xzf {output.name} && {PREFIX}/install.sh'\n"
          f"  ssh -t pi@raspberrypi.local {PREFIX}/run webcam --headless")
    return 0


if __name__ == "__main__":
    process.exit_with(main())
