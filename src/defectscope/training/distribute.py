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
import math
import os
from dataclasses import dataclass

from defectscope.core.errors import ConfigError
from defectscope.data.pipeline import DataSource, InputShard, create_dataset

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
            raise ConfigError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(
                f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )
        if self.cpu_devices < 0:
            raise ConfigError(f"cpu_devices must be >= 0, got {self.cpu_devices!r}")


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
        raise ConfigError(f"TF_CONFIG is not a cluster spec with cluster and task: {text!r}")
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
        raise ConfigError("strategy 'multiworker' needs TF_CONFIG (the cluster and this task)")
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


def concatenated_epochs(make_epoch, first_epoch: int, epochs: int):
    """One dataset per epoch from ``first_epoch`` on (and a spare one), concatenated, so that an
    epoch redone after ``--resume`` sees exactly the batches it saw before the kill."""
    dataset = make_epoch(first_epoch)
    for epoch in range(first_epoch + 1, epochs + 1):
        dataset = dataset.concatenate(make_epoch(epoch))
    return dataset


def _one_hot(num_classes: int):
    import tensorflow as tf

    return lambda images, labels: (images, tf.one_hot(labels, num_classes))


def _training_epoch(config, train: DataSource, epoch: int, batch_size: int, part=InputShard()):
    """The augmented, shuffled training data of one epoch, seeded by :func:`epoch_seed`."""
    return create_dataset(
        train,
        image_size=config.image_size,
        resize=config.resize,
        batch_size=batch_size,
        training=True,
        augment=config.augment,
        seed=epoch_seed(config.seed, epoch),
        shard=part,
    )


def single_worker_inputs(
    strategy, config, train: DataSource, val: DataSource, class_weight, first_epoch: int = 0
) -> FitInputs:
    """One process (default or mirrored strategy): batches of the global size, which Keras
    splits over the local replicas."""
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    one_hot = _one_hot(len(train.classes))
    train_data = concatenated_epochs(
        lambda epoch: _training_epoch(config, train, epoch, global_batch).map(one_hot),
        first_epoch,
        config.finetune.epochs,
    )
    val_data = create_dataset(
        val, image_size=config.image_size, batch_size=global_batch, resize=config.resize
    )
    steps = math.ceil(train.num_examples / global_batch)
    return FitInputs(train_data, val_data.map(one_hot), replicas, global_batch, steps, class_weight)


def multi_worker_inputs(
    strategy, config, train: DataSource, val: DataSource, class_weight, first_epoch: int = 0
) -> FitInputs:
    """Several workers: each reads its part of the training split (:class:`InputShard`: whole
    files when there are enough, else every n-th record) for a fixed number of steps, so every
    worker runs the same steps; validation is read whole by each worker. Class weights become
    sample weights (Keras' ``class_weight`` does not reach distributed datasets)."""
    import tensorflow as tf

    replicas, num_classes = strategy.num_replicas_in_sync, len(train.classes)
    global_batch = config.batch_size * replicas
    workers = max(1, cluster_size(cluster_spec()))
    local_batch = config.batch_size * max(1, replicas // workers)
    smallest = min(InputShard(workers, i).num_examples(train) for i in range(workers))
    steps = smallest // local_batch
    if steps < 1:
        raise ConfigError(
            f"{train.path}: a worker's part of {train.split!r} holds {smallest} images, fewer "
            f"than one batch of {local_batch}; use a smaller batch_size or fewer workers"
        )
    weights = tf.constant(
        [float((class_weight or {}).get(i, 1.0)) for i in range(num_classes)], tf.float32
    )

    def labelled(images, labels):
        return images, tf.one_hot(labels, num_classes), tf.gather(weights, labels)

    def train_fn(context):
        part = InputShard(context.num_input_pipelines, context.input_pipeline_id)
        batch = context.get_per_replica_batch_size(global_batch)

        def make_epoch(epoch: int):
            labels = labelled if class_weight else _one_hot(num_classes)
            dataset = _training_epoch(config, train, epoch, batch, part).map(labels)
            return dataset.repeat().take(steps * max(1, replicas // workers))

        return concatenated_epochs(make_epoch, first_epoch, config.finetune.epochs)

    def val_fn(context):
        batch = context.get_per_replica_batch_size(global_batch)
        dataset = create_dataset(
            val, image_size=config.image_size, batch_size=batch, resize=config.resize
        )
        return dataset.map(_one_hot(num_classes))

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
