"""Training on several devices or machines with TensorFlow's own strategies.

    --distribute none          one process (TensorFlow's default strategy)
    --distribute mirrored      tf.distribute.MirroredStrategy: every GPU of this machine
                               (the CPU when there is none)
    --distribute multi_worker  tf.distribute.MultiWorkerMirroredStrategy: the machines in
                               TF_CONFIG, each running the same command with its own index

Every worker runs the same training with the same seed and data; each of the R
replicas computes the gradient of its share of every batch and they are summed
(all-reduce), so all replicas hold the same weights after every step.

`batch_size` stays the global batch: replica r takes rows r, r+R, r+2R, ... of
each batch a one-process run draws (train.trainer's AugmentedBatches), so the
learning rate, schedule and epochs mean the same on one machine or ten. Only
the epoch's last, partial batch is dropped, so that every replica gets rows.

Only the chief (worker 0) writes the run directory; the other workers write
their copies of the same files to a temporary directory that is removed
(TensorFlow's pattern: saving may take part in collectives, so every worker
saves).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

STRATEGIES = ("none", "mirrored", "multi_worker")


@dataclass(frozen=True)
class Cluster:
    """This process's place in TF_CONFIG's cluster."""
    task_type: str            # "chief" or "worker"
    task_index: int
    workers: int              # processes taking part, the chief included
    address: str              # this process's "host:port" in the cluster


def cluster_from_tf_config(text: str | None) -> Cluster:
    """Parse TF_CONFIG (the JSON TensorFlow reads) into a Cluster, or raise
    ConfigError saying what is wrong. Pure. TensorFlow itself fails late and
    with a traceback on most of these mistakes."""
    if not text:
        raise ConfigError("--distribute multi_worker needs TF_CONFIG, e.g. "
                          "TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:12345\", \"host2:12345\"]}, "
                          "\"task\": {\"type\": \"worker\", \"index\": 0}}' (docs/distributed.md)")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, task_index = task["type"], int(task["index"])
        members = {kind: list(addresses) for kind, addresses in cluster.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(f"TF_CONFIG is not a cluster and task ({type(e).__name__}: {e}); "
                          "see docs/distributed.md") from None
    if task_type not in ("chief", "worker") or task_type not in members:
        raise ConfigError(f"TF_CONFIG: task type {task_type!r} is not one of the cluster's "
                          f"{', '.join(sorted(members)) or 'nothing'} (chief or worker)")
    if not 0 <= task_index < len(members[task_type]):
        raise ConfigError(f"TF_CONFIG: task index {task_index} is outside the {len(members[task_type])} "
                          f"{task_type} address(es)")
    if len(members.get("chief", [])) > 1:
        raise ConfigError("TF_CONFIG: a cluster has at most one chief")
    workers = len(members.get("chief", [])) + len(members.get("worker", []))
    return Cluster(task_type, task_index, workers, str(members[task_type][task_index]))


def tf_configs(addresses: list[str]) -> list[str]:
    """TF_CONFIG for each worker of a cluster of `addresses` ("host:port"), worker 0
    the chief. Pure."""
    return [json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": i}})
            for i in range(len(addresses))]


def free_local_addresses(count: int) -> list[str]:
    """`count` "127.0.0.1:port" addresses whose ports were free a moment ago."""
    import socket
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()


def local_tf_configs(workers: int) -> list[str]:
    """TF_CONFIG for each of `workers` processes on this machine: the tests,
    tools.distributed_steps and a first try of multi_worker."""
    return tf_configs(free_local_addresses(workers))


def steps_per_epoch(inputs: int, batch_size: int, distributed: bool) -> int:
    """Steps in an epoch of `inputs` training inputs. Distributed: full global batches
    only, so that every replica gets rows (ConfigError if there is none)."""
    if not distributed:
        return math.ceil(inputs / batch_size)
    if inputs < batch_size:
        raise ConfigError(f"{inputs} training inputs are fewer than one batch ({batch_size})")
    return inputs // batch_size


def check(name: str, environ=os.environ) -> None:
    """ConfigError unless `--distribute name` can start here: a known name and, for
    multi_worker, a usable TF_CONFIG. Pure; runs before TensorFlow loads, whose own
    messages for these mistakes come late and as tracebacks."""
    if name not in STRATEGIES:
        raise ConfigError(f"distribute must be one of {', '.join(STRATEGIES)}, not {name!r}")
    if name == "multi_worker":
        cluster_from_tf_config(environ.get("TF_CONFIG"))


def make_strategy(name: str, environ=os.environ):
    """The tf.distribute strategy `--distribute name` asks for, or None for "none".
    MultiWorkerMirroredStrategy must exist before TensorFlow runs any op, so call
    this first."""
    check(name, environ)
    if name == "none":
        return None
    import tensorflow as tf
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    try:
        return _keras_multi_worker_strategy_class()()
    except tf.errors.OpError as e:  # e.g. "Could not start gRPC server"
        address = cluster_from_tf_config(environ.get("TF_CONFIG")).address
        raise ConfigError(f"this worker cannot join the cluster at {address}: {e.message}; "
                          "is the port in use, or the address not this machine's?") from None


def _keras_multi_worker_strategy_class():
    import tensorflow as tf

    class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """MultiWorkerMirroredStrategy whose reduce() takes what Keras 3's fit() passes it.

        With more than one worker, Keras 3.15's TensorFlow trainer calls
        `strategy.reduce("MEAN", (x, y), axis=None)` on a whole batch (to build
        the model) and `reduce("MEAN", scalar, axis=0)` on every metric; the
        stock strategy accepts neither a tuple nor axis 0 of a scalar there
        (keras-team/keras#20585). Reducing each tensor, and a scalar over no
        axis, is what both calls mean.
        """

        def reduce(self, reduce_op, value, axis):
            def reduce_one(v):
                rank = self.experimental_local_results(v)[0].shape.rank
                return super(KerasMultiWorkerStrategy, self).reduce(reduce_op, v, None if rank == 0 else axis)
            return tf.nest.map_structure(reduce_one, value)

    return KerasMultiWorkerStrategy


def scope(strategy):
    """The strategy's scope, where a model's variables must be created; nothing without one."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def is_chief(strategy) -> bool:
    """Does this process write the run directory? Always, without a strategy."""
    return strategy is None or strategy.extended.should_checkpoint


def replica_rows(batch_rows: int, replica: int, replicas: int) -> np.ndarray:
    """Indices of a batch's rows that `replica` of `replicas` trains on: r, r+R, ...
    Pure; together the replicas cover every row exactly once."""
    return np.arange(replica, batch_rows, replicas)


def distributed_batches(strategy, batches, steps_per_epoch: int):
    """A tf.distribute dataset of `batches` (train.trainer's AugmentedBatches, one
    global batch per step) for model.fit(..., steps_per_epoch=steps_per_epoch).

    It runs on, epoch after epoch (fit stops it), each epoch the first
    `steps_per_epoch` batches of AugmentedBatches' epoch, which is a function of
    (seed, epoch) only: every worker draws the same global batches and keeps its
    replicas' rows. Pixels go as float32, not uint8: fit's first step all-reduces a
    batch, and collectives take no 8-bit integers (the models scale 0..255 themselves).
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    def per_pipeline(context: tf.distribute.InputContext):
        local = replicas // context.num_input_pipelines  # replicas fed by this worker
        first = context.input_pipeline_id * local

        def generate():
            while True:
                for step in range(steps_per_epoch):
                    x, y = batches[step]
                    for replica in range(first, first + local):
                        rows = replica_rows(len(x), replica, replicas)
                        yield x[rows].astype(np.float32), y[rows]
                batches.on_epoch_end()

        x, y = batches[0]
        signature = (tf.TensorSpec((None, *x.shape[1:]), tf.float32), tf.TensorSpec((None, *y.shape[1:]), tf.float32))
        return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)

    return strategy.distribute_datasets_from_function(per_pipeline)


def any_worker(strategy, flag: bool) -> bool:
    """True if `flag` is true on any worker. Every worker must call it at the same
    point (it is a collective): a decision taken from one machine's clock, such as
    --max_minutes, would otherwise stop one worker while the others wait for it."""
    if strategy is None:
        return flag
    import tensorflow as tf
    mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, tf.constant(1.0 if flag else 0.0), axis=None)
    return float(mean) > 0.0


def wait_for_all(strategy) -> None:
    """Return when every worker has called it (a collective; nothing without a strategy).
    The workers wait here for the chief to finish the run directory: a worker that
    exits first is reported by the chief's TensorFlow as a crashed task."""
    any_worker(strategy, False)


def lost_contact(error: BaseException) -> str | None:
    """If `error` is TensorFlow reporting that a peer stopped (crashed, killed,
    unreachable: UnavailableError, AbortedError, CancelledError), a one-line
    summary of it; else None."""
    import tensorflow as tf
    if not isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)):
        return None
    # TensorFlow's message is many lines (the graph node's stack among them); the
    # one saying what happened names the abort or the unhealthy task.
    lines = [line.strip() for line in str(error.message).splitlines()]
    detail = next((line for line in lines if "aborted" in line or "unhealthy" in line), "")
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__
