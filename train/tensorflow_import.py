"""Import TensorFlow without the notices it prints on every start.

TensorFlow 2.21 writes these to file descriptor 2 while it loads, twice
(two of its libraries each log them), whatever TF_CPP_MIN_LOG_LEVEL says:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. You may see slightly different ...

and, without TF_CPP_MIN_LOG_LEVEL=2, cpu_feature_guard's two lines about
instructions it was not built for. None of it asks anything of the user,
and the first lines of `make train` are better spent on the config. So the
import runs with fd 2 captured (edge_runtime.native_stderr), these lines are
dropped, and anything else (a real error) is passed on.
"""

from __future__ import annotations

import os

from edge_runtime import native_stderr

STARTUP_NOTICES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "] oneDNN custom operations are on.",
    "] This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)


def is_startup_notice(line: str) -> bool:
    """Is `line` one of the notices TensorFlow prints on every start? Pure."""
    return any(notice in line for notice in STARTUP_NOTICES)


def import_tensorflow():
    """Import and return the tensorflow module, its start-up notices dropped.

    Call it before the first `import keras` of a command; later imports find
    TensorFlow loaded and print nothing.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own INFO and WARNING lines
    with native_stderr.dropping(is_startup_notice):  # a failed import's messages still get through
        import tensorflow
    return tensorflow
