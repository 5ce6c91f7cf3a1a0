"""`python -m edge_runtime info`: which model a command would use, where it came from,
and the metadata it carries."""

from __future__ import annotations

import json
import os
import sys

from .argtypes import add_model_arguments
from .deployed import find_model


def configure(parser) -> None:
    add_model_arguments(parser)


def run(args) -> int:
    from .classifier import Classifier
    choice = find_model(args.model)
    clf = Classifier(choice.path, num_threads=args.threads)  # loads it: proves metadata and model agree
    text = json.dumps({"model": str(choice.path), "source": choice.source, "threshold": clf.threshold,
                       "interpreter": f"{clf.backend.package} {clf.backend.version}",
                       "metadata": clf.metadata}, indent=2)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `info | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush can't fail
    return 0
