"""`python -m edge_runtime <command>` and the `edge-classify` console script.

A thin shell: each command lives in its own module exposing
`configure(parser)` (add its arguments) and `run(args) -> int` (exit status).
This file parses argv and dispatches; `process.command` maps named errors to
one-line messages and exit codes, and keeps tracebacks for `--debug`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from . import process
from .argtypes import HelpFormatter

# command -> module; modules are imported only when their command runs or
# its arguments are set up, so `doctor` works even when OpenCV is broken.
COMMANDS = {
    "classify": ("edge_runtime.classify", "classify image files, directories and globs"),
    "webcam": ("edge_runtime.webcam", "classify frames from a camera, video file or stream"),
    "serve": ("edge_runtime.serve", "a live web view and JSON API of the camera, for a browser on the LAN"),
    "doctor": ("edge_runtime.doctor", "check this device: Python, numpy, interpreter, model, cameras, display"),
    "bench": ("edge_runtime.bench", "measure latency and memory of a model on this device"),
    "info": ("edge_runtime.info", "print a model's metadata"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge_runtime", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--verbose", "-v", action="store_true", help="say which interpreter and model are used")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=HelpFormatter)
        p.set_defaults(command_module=module_name)
        importlib.import_module(module_name).configure(p)
    return parser


@process.command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `edge-classify photo.jpg` is shorthand for `classify photo.jpg`.
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["classify", *argv]
    args = build_parser().parse_args(argv)
    process.show_tracebacks(args.debug)
    return importlib.import_module(args.command_module).run(args)


def console_script() -> NoReturn:
    """The `edge-classify` entry point."""
    process.exit_with(main())


if __name__ == "__main__":
    process.exit_with(main())
