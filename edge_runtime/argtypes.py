"""argparse value types, the help formatter and the --model/--threads/--threshold
flags, shared by every command.

Each type turns one flag's text into a value or raises ArgumentTypeError
(or ValueError, which argparse reports as "invalid <type> value"), so a bad
flag is a usage message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

from .deployed import DEFAULT_THRESHOLD, MODEL_ENV_VAR, MODEL_FILENAME, MODELS_DIR


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is nothing to show: a default of
    None (the help says in words what happens then) or a help that names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or "default:" in text:
            return text
        return super()._get_help_string(action)


def count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum` (and at most `maximum`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return parse


positive_int = count(1)

# More than the cores of any device this runs on. The interpreter does not
# check: 0 fails as "not a loadable model" and 100000 crashes the process.
MAX_THREADS = 256
thread_count = count(1, MAX_THREADS)  # interpreter threads


def thread_list(text: str) -> list[int]:
    """'1,2' -> [1, 2]; each a valid --threads value, no duplicates, order kept."""
    values = [thread_count(v) for v in str(text).split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2, got {text!r}")
    return list(dict.fromkeys(values))


# Written as `not <in range>`: every comparison with nan is False, so nan is rejected too.
def probability(text: str) -> float:
    """A number from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be between 0 and 1")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: must be in (0, 1]")
    return value


def positive_number(text: str) -> float:
    """A finite number above 0."""
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number")
    return value


def non_negative_number(text: str) -> float:
    """A number of 0 or more."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more")
    return value


MODEL_HELP = (f"a .tflite model with metadata (default: ${MODEL_ENV_VAR}, else {MODELS_DIR}/{MODEL_FILENAME} "
              "as `make convert` writes it, else the model shipped with edge_runtime; `info` says which)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model and --threads, shared by every command that runs a model."""
    parser.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    parser.add_argument("--threads", type=thread_count, default=1,
                        help=f"interpreter threads (1 to {MAX_THREADS})")


def add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    """--threshold, shared by every command that labels images; None means the model's own."""
    parser.add_argument("--threshold", type=probability, default=None,
                        help="a top score below this is reported as 'unknown' (default: the threshold calibrated "
                             f"into the model's metadata, else {DEFAULT_THRESHOLD})")


def add_own_argument(parser: argparse.ArgumentParser, saves: bool = False) -> None:
    """--own DIR, shared by every command that labels images: the user's own photos, mixed in.
    `saves`: the command's label buttons or keys save into DIR and teach the model at once."""
    parser.add_argument("--own", type=Path, default=None, metavar="DIR",
                        help="mix in your own photos: DIR/<class>/*.jpg (DIR/none/ for things that are none of "
                             "the classes), the layout --collect writes; their embeddings are kept in "
                             "DIR/imprint.json" + ("; the label buttons/keys save into DIR and count at once"
                                                   if saves else ""))
