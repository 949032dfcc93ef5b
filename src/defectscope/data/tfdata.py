"""tf.data settings every defectscope pipeline shares.

TensorFlow's autotuning runs a thread per iterator that wakes at growing intervals (10 ms,
doubling up to 60 s). Destroying the iterator can wait for that thread's next wake-up: a
prediction pass over 360 images ended 19 s late in about half the passes, always at the
wake-up 41 s after the pass began (docs/benchmarks.md, "a stall at a stream's end"). Without
the thread, ``num_parallel_calls=AUTOTUNE`` runs ``min(16, CPU cores)`` calls at once; no
pass stalled, and passes that had not stalled took as long (22.0-22.2 s against 21.9-22.2).
"""

from __future__ import annotations

from collections.abc import Iterable


def without_autotune_thread(dataset):
    """``dataset`` with tf.data's autotuning thread switched off (see the module's note)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def record_dataset(files: Iterable[str]):
    """The serialized records of TFRecord ``files``, in order, without the autotuning thread."""
    import tensorflow as tf

    return without_autotune_thread(tf.data.TFRecordDataset(list(files)))
