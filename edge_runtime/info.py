"""`python -m edge_runtime info`: print the metadata a model carries."""

from __future__ import annotations

import json

from .argtypes import add_model_arguments
from .deployed import default_model_path


def configure(parser) -> None:
    add_model_arguments(parser)


def run(args) -> int:
    model = args.model or default_model_path()
    from .classifier import Classifier
    clf = Classifier(model, num_threads=args.threads)  # loads it: proves metadata and model agree
    print(json.dumps({"model": str(model), "interpreter": f"{clf.backend.package} {clf.backend.version}",
                      "metadata": clf.metadata}, indent=2))
    return 0
