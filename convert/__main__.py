"""python -m convert: export TFLite variants of a trained model, prove their
accuracy on the test set, and deploy the int8 model if it passes the gate."""

from __future__ import annotations

import argparse

from edge_runtime import process
from train.config import add_config_arguments, config_from_args

NEXT_STEPS = """
next:
  python -m edge_runtime classify PHOTO.jpg           # classify image files (make classify ARGS=...)
  python -m edge_runtime webcam --camera 0             # live camera (make webcam)
  make bench                                           # size, accuracy and speed of every variant
  make pi-bundle                                       # tarball to copy to a Raspberry Pi
"""


@process.command
def main(argv: list[str] | None = None) -> int:
    # Imported here, not at the top: numpy then loads once Ctrl-C is handled (and
    # TensorFlow only inside run(), after the arguments are known to be good).
    from edge_runtime.deployed import model_filename

    from .pipeline import REPORT, ConvertConfig, run

    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_config_arguments(parser, ConvertConfig)
    args = parser.parse_args(argv)
    process.show_tracebacks(args.debug)
    try:
        config = config_from_args(args, ConvertConfig)
        config.variant_list()
    except ValueError as e:
        parser.error(str(e))
    from train.tensorflow_import import import_tensorflow
    import_tensorflow()
    run(config)
    print(f"deployed {config.out_dir}/{model_filename()} "
          f"(report: {config.out_dir}/{REPORT}.md)")
    print(NEXT_STEPS)
    return 0


if __name__ == "__main__":
    process.exit_with(main())
