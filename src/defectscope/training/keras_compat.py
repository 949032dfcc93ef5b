"""Workarounds for Keras 3 ``fit`` under ``tf.distribute.MultiWorkerMirroredStrategy``.

Keras 3 (3.12 here) has two bugs on that path (keras-team/keras#20585, open):

1. Before the first step, ``fit`` reduces one distributed input batch with ``strategy.reduce``,
   which fails for a tuple under the multi-worker strategy. We build the optimizer, loss and
   metrics from shapes beforehand, so that step has nothing to do.
2. Each step's logs (scalars) are reduced across workers with ``axis=0``, which fails for
   scalars. We reduce them with ``axis=None``, as ``tf.keras`` did.

Both are applied only to a model trained under the multi-worker strategy; the tests in
``tests/training/test_distribute.py`` train two real workers through them.
"""

from __future__ import annotations

import numpy as np


def _patch_log_reduction() -> None:
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "defectscope_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        from keras.src import tree

        if tf_trainer._collective_all_reduce_multi_worker(strategy) and reduction in (
            "auto",
            "mean",
        ):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.defectscope_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def prepare_multiworker_fit(model, strategy, image_size: int, num_classes: int) -> None:
    """Make ``model.fit`` work under ``strategy`` (a multi-worker one; else nothing to do)."""
    from keras.src.backend.tensorflow.trainer import _collective_all_reduce_multi_worker

    if not _collective_all_reduce_multi_worker(strategy):
        return
    _patch_log_reduction()
    images = np.zeros((1, image_size, image_size, 3), np.float32)
    labels = np.zeros((1, num_classes), np.float32)
    with strategy.scope():
        model._symbolic_build(data_batch=(images, labels))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
