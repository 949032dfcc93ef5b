"""tf.distribute for the trainer: strategy choice, chief-only writes and sharded input.

Strategies are TensorFlow's own: ``default`` (one device), ``mirrored``
(:class:`tf.distribute.MirroredStrategy`, the GPUs of this machine, or the CPU split into
``cpu_devices`` logical devices) and ``multiworker``
(:class:`tf.distribute.MultiWorkerMirroredStrategy`, the cluster of ``TF_CONFIG``). ``auto``
picks ``multiworker`` when ``TF_CONFIG`` names more than one task, ``mirrored`` when there is
more than one GPU or logical CPU, else ``default``.

``batch_size`` in the config is per replica: the global batch is ``batch_size x replicas`` and
the fine-tuning learning rate is scaled by ``replicas`` (linear scaling) unless turned off.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
MIXED_PRECISION = ("off", "float16", "bfloat16")


@dataclass
class DistributeConfig:
    """How training is spread over devices and workers, and its numeric precision."""

    strategy: str = "auto"  # auto | default | mirrored | multiworker
    cpu_devices: int = 0  # > 1: split the CPU into this many logical devices (mirrored on CPU)
    scale_learning_rate: bool = True  # fine-tuning rate x replicas (linear scaling rule)
    mixed_precision: str = "off"  # off | float16 (GPUs, with loss scaling) | bfloat16
    xla: bool = False  # compile the training step with XLA (jit_compile)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )
        if self.cpu_devices < 0:
            raise ValueError(f"cpu_devices must be >= 0, got {self.cpu_devices!r}")


def cluster_spec() -> dict:
    """``TF_CONFIG`` as a dict (``{}`` when unset); a malformed value is an error naming it."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return {}
    try:
        spec = json.loads(text)
        valid = isinstance(spec["cluster"], dict) and {"type", "index"} <= set(spec["task"])
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ValueError(f"TF_CONFIG is not a cluster spec with cluster and task: {text!r}")
    return spec


def cluster_size(spec: dict) -> int:
    return sum(len(tasks) for name, tasks in spec.get("cluster", {}).items() if name != "ps")


def is_chief(spec: dict | None = None) -> bool:
    """The task that writes: ``chief``, else worker 0; a single process is always chief."""
    spec = cluster_spec() if spec is None else spec
    if not spec:
        return True
    task = spec["task"]
    if "chief" in spec["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def task_label(spec: dict | None = None) -> str:
    spec = cluster_spec() if spec is None else spec
    return f"{spec['task']['type']}-{spec['task']['index']}" if spec else "local"


def split_cpu(devices: int) -> None:
    """Split the (first) CPU into ``devices`` logical devices; call before TF touches devices."""
    import tensorflow as tf

    if devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    existing = tf.config.get_logical_device_configuration(cpu)
    if existing and len(existing) == devices:
        return
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
    )


def resolve_strategy_name(config: DistributeConfig) -> str:
    if config.strategy != "auto":
        return config.strategy
    import tensorflow as tf

    if cluster_size(cluster_spec()) > 1:
        return "multiworker"
    if len(tf.config.list_physical_devices("GPU")) > 1 or config.cpu_devices > 1:
        return "mirrored"
    return "default"


def create_strategy(config: DistributeConfig):
    """The tf.distribute strategy ``config`` asks for (create it before any other TF work)."""
    import tensorflow as tf

    name = resolve_strategy_name(config)
    if name == "multiworker" and not cluster_spec():
        raise ValueError("strategy 'multiworker' needs TF_CONFIG (the cluster and this task)")
    split_cpu(config.cpu_devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def strategy_name(strategy) -> str:
    return {
        "MirroredStrategy": "mirrored",
        "MultiWorkerMirroredStrategy": "multiworker",
        "CollectiveAllReduceStrategy": "multiworker",
    }.get(type(strategy).__name__, "default")


def set_precision(config: DistributeConfig) -> None:
    """Global Keras dtype policy; the model keeps its softmax output in float32."""
    import keras

    policy = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
    keras.mixed_precision.set_global_policy(policy[config.mixed_precision])


@dataclass
class FitInputs:
    """What ``model.fit`` gets under a strategy, and the batch arithmetic behind it."""

    train: object
    val: object
    replicas: int
    global_batch: int
    steps_per_epoch: int  # optimizer steps per epoch (fit and the learning-rate schedule)
    class_weight: dict | None  # None when folded into the dataset as sample weights


def epoch_seed(seed: int, epoch: int) -> int:
    """The data seed of one epoch: shuffling and augmentation depend on (seed, epoch) only."""
    return seed * 10_000 + epoch


def _epochs_of(make_epoch, first_epoch: int, epochs: int):
    """One dataset per epoch from ``first_epoch`` on (and a spare one), concatenated, so that an
    epoch redone after ``--resume`` sees exactly the batches it saw before the kill."""
    dataset = make_epoch(first_epoch)
    for epoch in range(first_epoch + 1, epochs + 1):
        dataset = dataset.concatenate(make_epoch(epoch))
    return dataset


def distributed_inputs(
    strategy, config, train, val, class_weight: dict | None, first_epoch: int = 0
) -> FitInputs:
    """Training and validation input for ``strategy``, from epoch ``first_epoch`` on.

    One worker (default, mirrored): batches of the global size, which Keras splits over the
    replicas. Several workers: each builds its own pipeline over its part of the training
    split (:class:`InputShard`: whole files when there are enough, else every n-th record),
    with a fixed number of steps so every worker runs the same steps; validation is read whole
    by each worker, so its metrics are the same everywhere. Each epoch's order and
    augmentation come from :func:`epoch_seed`.
    """
    import math

    import tensorflow as tf

    from defectscope.data.pipeline import InputShard, create_dataset

    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    num_classes = len(train.classes)
    epochs = config.finetune.epochs

    def one_hot(images, labels):
        return images, tf.one_hot(labels, num_classes)

    def augmented(epoch: int, **kwargs):
        seed = epoch_seed(config.seed, epoch)
        return create_dataset(
            train,
            image_size=config.image_size,
            training=True,
            augment=config.augment,
            seed=seed,
            **kwargs,
        )

    if strategy_name(strategy) != "multiworker":
        steps = math.ceil(train.num_examples / global_batch)
        train_data = _epochs_of(
            lambda epoch: augmented(epoch, batch_size=global_batch).map(one_hot),
            first_epoch,
            epochs,
        )
        val_data = create_dataset(val, image_size=config.image_size, batch_size=global_batch)
        return FitInputs(
            train_data, val_data.map(one_hot), replicas, global_batch, steps, class_weight
        )
    workers = max(1, cluster_size(cluster_spec()))
    local_replicas = max(1, replicas // workers)
    local_batch = config.batch_size * local_replicas
    smallest = min(InputShard(workers, i).num_examples(train) for i in range(workers))
    steps = smallest // local_batch
    if steps < 1:
        raise ValueError(
            f"{train.path}: a worker's part of {train.split!r} holds {smallest} images, fewer "
            f"than one batch of {local_batch}; use a smaller batch_size or fewer workers"
        )
    weights = tf.constant(
        [float((class_weight or {}).get(i, 1.0)) for i in range(num_classes)], tf.float32
    )

    def weighted(images, labels):
        return images, tf.one_hot(labels, num_classes), tf.gather(weights, labels)

    def train_fn(context):
        part = InputShard(context.num_input_pipelines, context.input_pipeline_id)
        batch = context.get_per_replica_batch_size(global_batch)

        def make_epoch(epoch: int):
            dataset = augmented(epoch, batch_size=batch, shard=part)
            dataset = dataset.map(weighted if class_weight else one_hot)
            return dataset.repeat().take(steps * local_replicas)  # the same steps everywhere

        return _epochs_of(make_epoch, first_epoch, epochs)

    def val_fn(context):
        batch = context.get_per_replica_batch_size(global_batch)
        return create_dataset(val, image_size=config.image_size, batch_size=batch).map(one_hot)

    log.info(
        "worker %s reads %s-level shards of %s; %d steps per epoch",
        task_label(),
        InputShard(workers, 0).level(train),
        train.split,
        steps,
    )
    return FitInputs(
        strategy.distribute_datasets_from_function(train_fn),
        strategy.distribute_datasets_from_function(val_fn),
        replicas,
        global_batch,
        steps,
        None,
    )


def local_tf_configs(workers: int) -> list[str]:
    """``TF_CONFIG`` values for ``workers`` worker processes on this machine (free loopback
    ports), for trying multi-worker training on one box; worker 0 is the chief."""
    import socket

    sockets = [socket.socket() for _ in range(workers)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    addresses = [f"localhost:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})
        for i in range(workers)
    ]
