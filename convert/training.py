"""Set-up every training script shares: quiet TensorFlow logs, a fixed thread count (so a run on a
shared 2-core machine is reproducible and does not oversubscribe), and one seed for Python, numpy
and TensorFlow."""

from __future__ import annotations

import os


def start_tensorflow(*, threads: int | None, seed: int):
    """Import TensorFlow and Keras configured for a reproducible run; returns (tf, keras)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(seed)
    return tf, keras
