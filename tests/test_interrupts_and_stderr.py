"""What a user sees around the real work: Ctrl-C at any moment ends a command
with no traceback, killed by SIGINT (status 130 in a shell, so a calling
script stops too), and what native code writes to stderr is captured so the
noise can be dropped and the rest passed on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_runtime.process import INTERRUPTED, interruptible
from edge_runtime import native_stderr
from edge_runtime.interpreter import DELEGATE_NOTICE

ROOT = Path(__file__).resolve().parents[1]


# -- interruptible, in this process ----------------------------------------------------------
def test_ctrl_c_in_the_command_is_status_130():
    @interruptible
    def main():
        raise KeyboardInterrupt

    assert main() == INTERRUPTED == 130


@pytest.fixture
def sigint_on():
    """Python's own SIGINT handler, whatever the test run inherited: one started
    in the background (`make test &`) has SIGINT ignored, which interruptible keeps."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("wrapped", [
    ImportError('PyCapsule_Import could not import module "datetime"'),  # numpy's C extension
    RuntimeError("Error calling __set_name__ on '_axis_method_wrapper' instance"),  # matplotlib's classes
])
def test_ctrl_c_that_surfaces_as_another_exception_is_status_130(wrapped, sigint_on):
    """A SIGINT in the middle of an import can come out as the exception of the code it hit."""
    @interruptible
    def main():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here and raises KeyboardInterrupt...
        except KeyboardInterrupt:
            pass
        raise wrapped  # ...that became this

    assert main() == INTERRUPTED


def test_import_lock_callbacks_are_recognised():
    """Ctrl-C landing in importlib's weakref callback would be dropped; the handler must see it."""
    from edge_runtime.process import in_import_lock_callback as _in_import_lock_callback
    namespace = {"sys": sys}
    exec(compile("def cb():\n    return sys._getframe()\n", "<frozen importlib._bootstrap>", "exec"), namespace)
    assert _in_import_lock_callback(namespace["cb"]())
    assert not _in_import_lock_callback(sys._getframe())


def test_an_import_error_without_ctrl_c_is_not_hidden():
    @interruptible
    def main():
        raise ImportError("no module named cv2")

    with pytest.raises(ImportError, match="cv2"):
        main()


def test_the_previous_sigint_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    assert interruptible(lambda: 7)() == 7
    assert signal.getsignal(signal.SIGINT) is before


def test_the_cli_is_in_place_before_numpy_loads():
    """`python -m edge_runtime` installs its handler in main(); numpy must not load before it."""
    code = "import sys, edge_runtime, edge_runtime.cli; print('numpy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


# -- as a user runs it: Ctrl-C while TensorFlow is still loading -----------------------------
def sigint_on_in_child() -> None:
    """A pytest run started in the background inherits SIGINT ignored; a user's terminal has it on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted_after(seconds: float, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=ROOT,
                               preexec_fn=sigint_on_in_child)
    time.sleep(seconds)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("command", ["train", "convert"])
def test_ctrl_c_while_loading_is_quiet(command, tiny_run, tmp_path):
    # 1 s: past Python's own start-up, well before TensorFlow has loaded (2-3 s here).
    args = {"train": ["train", "--epochs", "1", "--train_limit", "500", "--photo_dir", "", "--out_dir", str(tmp_path / "runs")],
            "convert": ["convert", "--run_dir", str(tiny_run), "--out_dir", str(tmp_path / "models")]}[command]
    r = interrupted_after(1.0, *args)
    assert r.returncode == -signal.SIGINT, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.rglob("*.keras")) and not list(tmp_path.rglob("*.tflite"))  # nothing left half-made


def test_an_interrupted_command_stops_the_shell_script_that_ran_it(tiny_run, tmp_path):
    """Ctrl-C in a terminal goes to the whole process group: the script and the command.
    bash waits for the command, and runs the next line if the command exited (even
    with 130), taking that to mean it handled Ctrl-C; it stops if it died of SIGINT."""
    script = '"$0" -m convert --run_dir "$1" --out_dir "$2"; echo next command ran'
    process = subprocess.Popen(["bash", "-c", script, sys.executable, str(tiny_run), str(tmp_path / "models")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                               preexec_fn=sigint_on_in_child)
    time.sleep(1.0)  # convert is still importing TensorFlow
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert "next command ran" not in stdout, stderr
    assert process.returncode == -signal.SIGINT
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("status, ends_with", [(0, 0), (3, 3), (INTERRUPTED, -signal.SIGINT)])
def test_exit_with_passes_statuses_on_and_ends_an_interrupt_by_sigint(status, ends_with):
    code = f"from edge_runtime.process import exit_with; exit_with({status})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
                       preexec_fn=sigint_on_in_child)
    assert (r.returncode, r.stderr) == (ends_with, "")


# -- native stderr ----------------------------------------------------------------------------
def test_captured_holds_what_native_code_wrote_and_passes_on_nothing_itself(capfd):
    with native_stderr.captured() as lines:
        os.write(2, b"ERROR: something the user must see\n" + DELEGATE_NOTICE.encode() + b"\nlast, no newline")
    assert lines == ["ERROR: something the user must see", DELEGATE_NOTICE, "last, no newline"]
    assert capfd.readouterr().err == ""
    os.write(2, b"after\n")  # fd 2 is the real stderr again
    assert capfd.readouterr().err == "after\n"


def test_a_real_model_loads_without_the_delegate_notice(tiny_int8_model, capfd):
    from edge_runtime.interpreter import find_interpreter, open_interpreter
    open_interpreter(find_interpreter(), str(tiny_int8_model), 1)
    assert capfd.readouterr().err == ""


def test_what_else_the_interpreter_writes_gets_through_even_when_it_fails(capfd):
    from edge_runtime.interpreter import InterpreterChoice, open_interpreter

    def failing_interpreter(model_path, num_threads):  # writes like LiteRT's C++ core, then fails
        os.write(2, DELEGATE_NOTICE.encode() + b"\nERROR: Didn't find op for builtin opcode 'FOO'\n")
        raise RuntimeError("Encountered unresolved custom op")

    with pytest.raises(RuntimeError):
        open_interpreter(InterpreterChoice("test", "0", failing_interpreter), "model.tflite", 1)
    assert capfd.readouterr().err == "ERROR: Didn't find op for builtin opcode 'FOO'\n"


def test_tensorflow_loads_without_its_startup_notices():
    """What every TensorFlow start printed (twice) before the first line of `make train`."""
    code = ("import sys; from train.tensorflow_import import import_tensorflow; "
            "tf = import_tensorflow(); import keras; print(tf.__version__)")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() and r.stderr == "", r.stderr


def test_only_the_known_tensorflow_notices_are_dropped():
    from train.tensorflow_import import is_startup_notice
    notices = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795398217.319407   28800 port.cc:153] oneDNN custom operations are on. You may see "
        "slightly different numerical results due to floating-point round-off errors.",
        "I0000 00:00:1795398276.838915   28902 cpu_feature_guard.cc:227] This TensorFlow binary is optimized "
        "to use available CPU instructions in performance-critical operations.",
        "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, "
        "rebuild TensorFlow with the appropriate compiler flags.",
    ]
    assert all(map(is_startup_notice, notices))
    assert not is_startup_notice("E0000 00:00:1795398217.3 cuda_dnn.cc:8310] Unable to register cuDNN factory")
    assert not is_startup_notice("ImportError: libtensorflow_framework.so.2: cannot open shared object file")


def test_dropping_passes_on_all_but_the_noise_even_when_the_block_fails(capfd):
    with pytest.raises(RuntimeError):
        with native_stderr.dropping(lambda line: line.startswith("noise")):
            os.write(2, b"noise: every run\nERROR: what went wrong\n")
            raise RuntimeError("the library failed")
    assert capfd.readouterr().err == "ERROR: what went wrong\n"
