"""The transformer's forward pass as an ONNX graph built from its weights, served by ONNX
Runtime on a CPU.

Why: on a CPU without a GPU the transformer is the worker's whole cost, and ONNX Runtime's fused
kernels (one ``Attention`` op per block, LayerNorm fused with the residual add and GELU with its
bias) with int8 weights run the same network several times faster than Keras on TensorFlow
(docs/transformer.md has the measured rates and what int8 costs in accuracy). The graph is
written here from the artifact's ``model.safetensors`` (Hugging Face names) with ``onnx.helper``
rather than exported from a framework: the product has no PyTorch, and Keras 3 has no exporter
that emits these fused ops. Nothing is stored: a loaded artifact builds its graph in a second.

Numerics follow :mod:`fintweet.models.bert` (post-LayerNorm blocks, the config's activation:
exact erf GELU, its tanh approximation ``gelu_new`` or ReLU; padded positions masked out of
attention) and ``build_classifier`` (mean pooling, or on [CLS] BERT's pooler when the
checkpoint has one and [CLS] itself when not; two softmax heads), so float32 here agrees with
Keras to ~1e-6 (tested).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fintweet.core.labels import TASKS
from fintweet.models.bert import HIDDEN_ACTS, BertConfig, checkpoint_prefix, has_pooler

# onnx and onnxruntime are imported where used: a GPU machine serving with Keras has neither.
OPSET = 17  # LayerNormalization
# ONNX Runtime's contrib ops: Attention, SkipLayerNormalization, BiasGelu, FastGelu
MS_DOMAIN = "com.microsoft"


def build_graph(bert: BertConfig, weights: Mapping[str, np.ndarray], pooling: str) -> Any:
    """An ``onnx.ModelProto``: inputs ``input_ids`` and ``attention_mask`` (int32, batch ×
    length, as :meth:`WordPieceTexts.pad` makes them), outputs one probability matrix per task
    (float32, batch × classes). ``weights`` are the artifact's (encoder + ``classifier.*``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if bert.hidden_act not in HIDDEN_ACTS:  # BertConfig refuses others; a guard for a new one
        raise ValueError(f"hidden_act {bert.hidden_act!r} is not built (only "
                         f"{', '.join(HIDDEN_ACTS)})")
    p = checkpoint_prefix(weights)
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        # np.require, not np.ascontiguousarray, which turns a scalar into a 1-element vector
        inits.append(numpy_helper.from_array(np.require(value, requirements="C"), name))
        return name

    def w(name: str, transpose: bool = False) -> np.ndarray:
        value = np.asarray(weights[name], dtype=np.float32)
        return value.T if transpose else value

    def node(op: str, inputs: list[str], output: str, domain: str = "", **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    eps = float(bert.layer_norm_eps)

    def dense_add_norm(source: str, residual: str, dense: str, norm: str, tag: str) -> str:
        """``LayerNorm(residual + source @ W + b)``: the MatMul, then bias, residual add and
        LayerNorm in one ``SkipLayerNormalization`` kernel (BERT's add & norm)."""
        product = node("MatMul", [source, const(f"{tag}_w", w(f"{dense}.weight", True))],
                       f"{tag}_matmul")
        return node("SkipLayerNormalization",
                    [product, residual, const(f"{tag}_gamma", w(f"{norm}.weight")),
                     const(f"{tag}_beta", w(f"{norm}.bias")),
                     const(f"{tag}_bias", w(f"{dense}.bias"))],
                    f"{tag}_norm", domain=MS_DOMAIN, epsilon=eps)

    def activation(source: str, bias: str, tag: str) -> str:
        """``act(source + bias)`` for the config's ``hidden_act``, as :mod:`.bert` computes it:
        ``gelu`` exact (erf; BiasGelu), ``gelu_new`` the tanh approximation (FastGelu computes
        exactly ``0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))``, Keras's
        ``gelu(approximate=True)``), ``relu`` the standard op."""
        if bert.hidden_act == "gelu":
            return node("BiasGelu", [source, bias], tag, domain=MS_DOMAIN)
        if bert.hidden_act == "gelu_new":
            return node("FastGelu", [source, bias], tag, domain=MS_DOMAIN)
        return node("Relu", [node("Add", [source, bias], f"{tag}_biased")], tag)

    # Embeddings: the token-type row is the same for every position of a single-segment input,
    # so it is folded into the position table.
    word = const("word_embeddings", w(f"{p}embeddings.word_embeddings.weight"))
    positions = const("positions", w(f"{p}embeddings.position_embeddings.weight")
                      + w(f"{p}embeddings.token_type_embeddings.weight")[0][None, :])
    const("zero", np.array([0], dtype=np.int64))
    const("one", np.array([1], dtype=np.int64))
    const("two", np.array([2], dtype=np.int64))
    shape = node("Shape", ["input_ids"], "ids_shape")
    length = node("Slice", [shape, "one", "two"], "length")
    position = node("Slice", [positions, "zero", length, "zero"], "position")
    x = node("Gather", [word, "input_ids"], "word")
    x = node("Add", [x, position], "embedded")
    x = node("LayerNormalization", [x, const("emb_gamma", w(f"{p}embeddings.LayerNorm.weight")),
                                    const("emb_beta", w(f"{p}embeddings.LayerNorm.bias"))],
             "embeddings", axis=-1, epsilon=eps)

    for i in range(bert.num_hidden_layers):
        b = f"{p}encoder.layer.{i}"
        qkv_w = np.concatenate([w(f"{b}.attention.self.{n}.weight", True)
                                for n in ("query", "key", "value")], axis=1)
        qkv_b = np.concatenate([w(f"{b}.attention.self.{n}.bias")
                                for n in ("query", "key", "value")])
        attended = node("Attention", [x, const(f"l{i}_qkv_w", qkv_w), const(f"l{i}_qkv_b", qkv_b),
                                      "attention_mask"],
                        f"l{i}_attention", domain=MS_DOMAIN, num_heads=bert.num_attention_heads)
        x = dense_add_norm(attended, x, f"{b}.attention.output.dense",
                           f"{b}.attention.output.LayerNorm", f"l{i}_attention")
        inner = node("MatMul", [x, const(f"l{i}_in_w", w(f"{b}.intermediate.dense.weight", True))],
                     f"l{i}_intermediate")
        inner = activation(inner, const(f"l{i}_in_b", w(f"{b}.intermediate.dense.bias")),
                           f"l{i}_{bert.hidden_act}")
        x = dense_add_norm(inner, x, f"{b}.output.dense", f"{b}.output.LayerNorm", f"l{i}_output")

    if pooling == "mean":
        mask = node("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)
        mask = node("Unsqueeze", [mask, const("minus_one", np.array([-1], dtype=np.int64))],
                    "mask_3d")
        total = node("ReduceSum", [node("Mul", [x, mask], "masked"), "one"], "total",
                     keepdims=0)
        count = node("ReduceSum", [mask, "one"], "count", keepdims=0)
        count = node("Max", [count, const("tiny", np.array(1e-6, dtype=np.float32))],
                     "count_safe")
        pooled = node("Div", [total, count], "pooled")
    elif pooling == "cls":
        cls = node("Gather", [x, const("first", np.array(0, dtype=np.int64))], "cls", axis=1)
        if has_pooler(weights):
            dense = node("MatMul", [cls, const("pooler_w", w(f"{p}pooler.dense.weight", True))],
                         "pooler_dense")
            dense = node("Add", [dense, const("pooler_b", w(f"{p}pooler.dense.bias"))],
                         "pooler_biased")
            pooled = node("Tanh", [dense], "pooled")
        else:  # a checkpoint without BERT's pooler: Keras's BertEncoder pools [CLS] itself
            pooled = cls
    else:
        raise ValueError(f"pooling must be mean or cls, got {pooling!r}")

    outputs = []
    for task in TASKS:
        logits = node("MatMul", [pooled, const(f"{task}_w", w(f"classifier.{task}.weight", True))],
                      f"{task}_matmul")
        logits = node("Add", [logits, const(f"{task}_b", w(f"classifier.{task}.bias"))],
                      f"{task}_logits")
        node("Softmax", [logits], task, axis=-1)
        classes = int(weights[f"classifier.{task}.bias"].shape[0])
        outputs.append(helper.make_tensor_value_info(task, TensorProto.FLOAT, ["batch", classes]))

    inputs = [helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "length"])
              for name in ("input_ids", "attention_mask")]
    graph = helper.make_graph(nodes, "fintweet_transformer", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="fintweet")
    onnx.checker.check_model(model)
    return model


@contextlib.contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    """``quantize_dynamic`` logs "consider pre-processing" on the root logger each call (advice
    for convolutional nets: a BERT graph of fused ops gains nothing from it)."""
    root = logging.getLogger()

    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def quantize(model: Any) -> Any:
    """Dynamic int8 quantization of the weights of every MatMul and Attention, per output
    channel (per tensor, 95% of topic classes agreed with float32; per channel, 98.6%).
    Activations are quantized at run time with one scale per tensor, so per batch: a tweet's
    probabilities move slightly with the batch it is in. Embeddings, LayerNorms and softmaxes
    stay float32. The variants measured are in docs/transformer.md."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="fintweet-onnx-") as tmp, _quiet_root_warnings():
        source, target = Path(tmp) / "float32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(source))
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul", "Attention"],
                         weight_type=QuantType.QInt8, per_channel=True,
                         # onnx's shape inference does not know the contrib ops' output types
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return onnx.load(str(target))


class OnnxSession:
    """An ONNX Runtime session over the graph, callable like the Keras model's
    ``predict_on_batch``: ``{"input_ids", "attention_mask"}`` → ``{task: probabilities}``."""

    def __init__(self, model: Any, threads: int = 0, spinning: bool = False) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per physical core
        options.inter_op_num_threads = 1
        # Spinning threads keep a core busy between batches, the core the broker, Redis and
        # the worker's own writer thread need on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                         "1" if spinning else "0")
        self.session = ort.InferenceSession(model.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.asarray(value, dtype=np.int32) for name, value in inputs.items()}
        results = self.session.run(list(TASKS), feed)
        return dict(zip(TASKS, results, strict=True))


def session_for(bert: BertConfig, weights: Mapping[str, np.ndarray], pooling: str,
                runtime: str, threads: int = 0, spinning: bool = False) -> OnnxSession:
    """The session for ``runtime`` ``onnx`` (float32) or ``onnx-int8``."""
    if runtime not in ("onnx", "onnx-int8"):
        raise ValueError(f"runtime must be onnx or onnx-int8, got {runtime!r}")
    model = build_graph(bert, weights, pooling)
    if runtime == "onnx-int8":
        model = quantize(model)
    return OnnxSession(model, threads, spinning)
