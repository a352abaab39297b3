"""Which device TensorFlow will run the model on. TensorFlow places ops on a visible GPU by
itself; this only reports it, so an operator can see from the log whether the GPU was used."""

from __future__ import annotations


def describe_devices() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"inference on GPU ({', '.join(g.name for g in gpus)})"
    return "inference on CPU (no GPU visible)"
