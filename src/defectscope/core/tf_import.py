"""Import TensorFlow and Keras without their C++ start-up chatter on the terminal.

TensorFlow 2.21 prints several ``I0000``/``E0000`` lines on import and on the first device query
(oneDNN notice, "Could not find cuda drivers", cuInit failure on machines without a GPU), before
its log level applies. The command line calls :func:`import_tensorflow_quietly` once, before the
first TensorFlow work, with the process' stderr pointed at /dev/null for that moment only.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

_done = False

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
# what defectscope itself put into ONEDNN: a child process (``serve`` started by a program
# that trains) inherits both and may choose again; a value the user set has no such twin
ONEDNN_CHOSEN_BY_DEFECTSCOPE = "DEFECTSCOPE_CHOSE_ONEDNN_OPTS"


def prefer_onednn(enabled: bool) -> None:
    """Ask for TensorFlow's oneDNN CPU kernels (or its own) unless the user chose.

    Read by TensorFlow once, at import: a call after it changes nothing. TensorFlow turns
    oneDNN on by default only on CPUs with AVX-512 VNNI, BF16 or AMX; on an AVX2-only AMD EPYC
    its backward convolutions made a detector training step 1.6-1.9x slower without it
    (docs/benchmarks.md), so training asks for it; ``serve`` asks against it (its allocator
    keeps the memory of the largest image, docs/reliability.md). A value inherited from a
    defectscope process that chose for itself is not the user's: it is chosen again.
    """
    current = os.environ.get(ONEDNN)
    if current is not None and current != os.environ.get(ONEDNN_CHOSEN_BY_DEFECTSCOPE):
        return
    choice = "1" if enabled else "0"
    os.environ[ONEDNN] = os.environ[ONEDNN_CHOSEN_BY_DEFECTSCOPE] = choice


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras and query the devices once, with C-level stderr silenced.

    An import error is raised as usual (after stderr is restored). Later messages of TensorFlow
    (warnings, errors while running) are not affected.
    """
    global _done
    if _done or "tensorflow" in sys.modules:
        _done = True
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_silenced():
        import keras  # noqa: F401  (imports tensorflow, its backend)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe prints its failure here
    _done = True
