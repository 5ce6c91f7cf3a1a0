"""python -m train: train a Fashion-MNIST model (see train/config.py for every flag)."""

from __future__ import annotations

import argparse

from edge_runtime import process

from . import distribute
from .config import add_config_arguments, config_from_args


@process.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="start from a config JSON (e.g. a run's config.json or make tune's best)")
    parser.add_argument("--resume", action="store_true", help="continue runs/<name> from its last checkpoint")
    parser.add_argument("--no_reports", action="store_true", help="skip the PNG reports")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    process.show_tracebacks(args.debug)
    try:
        config = config_from_args(args)
        if args.resume and not config.name:
            raise ValueError("--resume needs --name of the run to continue")
        distribute.check(config.distribute)
    except (ValueError, OSError) as e:
        parser.error(str(e))
    # TensorFlow loads here, after the arguments are known to be good.
    from .tensorflow_import import import_tensorflow
    import_tensorflow()
    from . import trainer
    trainer.run(config, resume=args.resume, make_reports=not args.no_reports)
    return 0


if __name__ == "__main__":
    process.exit_with(main())
