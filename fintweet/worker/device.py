"""Which device the model will run on, for the worker's start-up log line. Keras places work on
a visible GPU by itself; this only reports it, so an operator can see whether the GPU was used."""

from __future__ import annotations

import sys


def describe_devices() -> str:
    """Asked through Keras, and only when loading the model already imported it: a linear model
    needs no deep-learning framework at all, and a GPU machine may run Keras on JAX or PyTorch
    with no TensorFlow installed (importing TensorFlow here ended the worker there)."""
    if "keras" not in sys.modules:
        return "inference on CPU (the model does not use Keras)"
    import keras

    backend = keras.backend.backend()
    try:
        devices = [str(device) for device in keras.distribution.list_devices()]
    except Exception:  # a backend without distribution support
        devices = []
    gpus = [device for device in devices if device.lower().startswith(("gpu", "cuda"))]
    if gpus:
        return f"inference on GPU ({', '.join(gpus)}; Keras on {backend})"
    return f"inference on CPU (no GPU visible to Keras on {backend})"
