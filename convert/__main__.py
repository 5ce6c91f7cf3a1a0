"""python -m convert: export TFLite variants of a trained model, prove their
accuracy on the test set, and deploy the int8 model if it passes the gate."""

from __future__ import annotations

import argparse
import sys

from edge_runtime.cli import exit_with, interruptible
from edge_runtime.errors import EdgeError
from train.config import add_config_arguments, config_from_args

NEXT_STEPS = """
next:
  python -m edge_runtime classify PHOTO.jpg           # classify image files (make classify ARGS=...)
  python -m edge_runtime webcam --camera 0             # live camera (make webcam)
  make bench                                           # size, accuracy and speed of every variant
  make pi-bundle                                       # tarball to copy to a Raspberry Pi
"""


@interruptible
def main(argv: list[str] | None = None) -> int:
    # Imported here, not at the top: numpy then loads once Ctrl-C is handled (and
    # TensorFlow only inside run(), after the arguments are known to be good).
    from .pipeline import ConvertConfig, model_filename, run

    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_config_arguments(parser, ConvertConfig)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, ConvertConfig)
        config.variant_list()
    except ValueError as e:
        parser.error(str(e))
    from train.tensorflow_import import import_tensorflow
    import_tensorflow()
    try:
        run(config)
    except EdgeError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"deployed {config.out_dir}/{model_filename('int8')} "
          f"(report: {config.out_dir}/conversion_report.md)")
    print(NEXT_STEPS)
    return 0


if __name__ == "__main__":
    exit_with(main())
