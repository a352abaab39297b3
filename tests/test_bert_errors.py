"""The transformer's encoder variants and error paths, on a synthetic BERT of 2 blocks, 32 wide,
with random weights (built here in a few milliseconds, no checkpoint read but the default
package's ``tokenizer.json``): Keras and the ONNX graph must agree for every pooling and
activation a checkpoint may bring, and each bad encoder dir, artifact or runtime must end in
one line naming it, not a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fintweet import models
from fintweet.cli.errors import user_error_message
from fintweet.core.artifacts import write_artifact
from fintweet.core.errors import UserError
from fintweet.core.labels import TASKS, num_classes
from fintweet.models import transformer as transformer_module
from fintweet.models.base import LabelledTexts
from fintweet.models.bert import (
    BertConfig,
    EncoderError,
    expected_shapes,
    resolve_encoder_dir,
    write_weights,
)
from fintweet.models.transformer import TransformerConfig, TransformerModel

TINY = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
        "model_type": "bert", "hidden_act": "gelu"}
# Long enough to fill every position: the limit must hold for the longest input.
TEXTS = ["$tsla up 5% after earnings xxurl", "fed holds rates", "a",
         "apple beats estimates, iphone sales strong, guidance raised " * 8, ""]


def _weights(bert: dict, pooler: bool, heads: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights of every tensor a BertModel of ``bert`` has (LayerNorm scales near 1,
    the rest small), plus the two heads when ``heads``."""
    rng = np.random.default_rng(seed)
    # Only the sizes matter here: a config the tests make invalid otherwise still gets weights.
    sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
             "max_position_embeddings")
    config = BertConfig(**{k: bert[k] for k in sizes}, num_attention_heads=1)
    weights = {name: (1.0 + 0.1 * rng.standard_normal(shape) if "LayerNorm.weight" in name
                      else 0.2 * rng.standard_normal(shape)).astype(np.float32)
               for name, shape in expected_shapes(config, pooler).items()}
    if heads:
        for task in TASKS:
            weights[f"classifier.{task}.weight"] = (
                0.3 * rng.standard_normal((num_classes(task), config.hidden_size))
            ).astype(np.float32)
            weights[f"classifier.{task}.bias"] = np.zeros(num_classes(task), np.float32)
    return weights


def _tokenizer() -> Path:
    return resolve_encoder_dir() / "tokenizer.json"


def encoder_dir(path: Path, pooler: bool = True, **changes: object) -> Path:
    """A checkpoint dir as fine-tuning reads it (``config.json``, ``model.safetensors``,
    ``tokenizer.json``)."""
    path.mkdir(parents=True, exist_ok=True)
    bert = {**TINY, **changes}
    (path / "config.json").write_text(json.dumps(bert))
    write_weights(path / "model.safetensors", _weights({**TINY, **changes}, pooler, heads=False))
    shutil.copyfile(_tokenizer(), path / "tokenizer.json")
    return path


def artifact_files(path: Path, pooler: bool, **changes: object) -> Path:
    """The files :meth:`TransformerModel.save` writes, for a model of ``TINY`` + ``changes``."""
    path.mkdir(parents=True, exist_ok=True)
    bert = {**TINY, **changes}
    write_weights(path / "model.safetensors", _weights(bert, pooler, heads=True))
    (path / "bert_config.json").write_text(json.dumps(bert))
    shutil.copyfile(_tokenizer(), path / "tokenizer.json")
    return path


def _config(**changes: object) -> dict[str, object]:
    return {"max_length": 64, "precision": "float32", "verbose": False, **changes}


@pytest.mark.parametrize(("pooling", "pooler", "act"), [
    ("cls", False, "gelu"),  # a checkpoint without BERT's pooler: [CLS] itself, as Keras does
    ("cls", True, "gelu_new"),
    ("mean", False, "relu"),
])
def test_onnx_agrees_with_keras_for_each_pooling_and_activation(
        tmp_path: Path, pooling: str, pooler: bool, act: str) -> None:
    files = artifact_files(tmp_path, pooler, hidden_act=act)
    keras_model = TransformerModel.load(files, _config(pooling=pooling, runtime="keras"))
    want = keras_model.predict_proba(TEXTS)
    assert keras_model.texts_ is not None
    assert max(map(len, keras_model.texts_.encode(TEXTS))) == 64  # every position used
    got = TransformerModel.load(files, _config(pooling=pooling, runtime="onnx")).predict_proba(
        TEXTS)
    for task in TASKS:
        assert np.ptp(want.task(task), axis=0).max() > 1e-3  # the inputs do change the output
        np.testing.assert_allclose(got.task(task), want.task(task), atol=1e-5, err_msg=task)
    int8 = TransformerModel.load(files, _config(pooling=pooling, runtime="onnx-int8"))
    np.testing.assert_allclose(int8.predict_proba(TEXTS).topic.sum(axis=1), 1.0, atol=1e-5)


def test_an_unknown_activation_is_one_line_naming_it(tmp_path: Path) -> None:
    files = artifact_files(tmp_path / "artifact", pooler=False, hidden_act="silu")
    with pytest.raises(models.ArtifactError, match=r"hidden_act 'silu' is not supported") as info:
        TransformerModel.load(files, _config(runtime="keras"))
    assert "\n" not in str(info.value)
    checkpoint = encoder_dir(tmp_path / "encoder", hidden_act="swish")
    with pytest.raises(EncoderError, match=r"hidden_act 'swish' is not supported"):
        _fit(checkpoint)


def _fit(checkpoint: Path, **changes: object) -> TransformerModel:
    config = TransformerConfig(encoder=str(checkpoint), epochs=1, max_length=16, verbose=False)
    for name, value in changes.items():
        setattr(config, name, value)
    return TransformerModel(config).fit(
        LabelledTexts(["$tsla up", "fed holds rates"], np.array([19, 3])),
        LabelledTexts(["stocks fall"], np.array([0])))


def _corrupt(path: Path) -> None:
    (path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")


def _truncate(path: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _bad_json(path: Path) -> None:
    (path / "config.json").write_text('{"model_type": "bert",')


@pytest.mark.parametrize(("change", "fit_changes", "expected"), [
    ({"model_type": "roberta"}, {}, r"config\.json: model_type 'roberta' is not a BERT encoder"),
    (_bad_json, {}, r"config\.json: Expecting"),
    ({"num_attention_heads": 5}, {}, r"hidden_size 32 is not a multiple of num_attention_heads"),
    ({}, {"num_layers": 3}, r"has 2 encoder layers, cannot keep 3 \(--encoder-layers"),
    (_corrupt, {}, r"model\.safetensors: not a readable safetensors file"),
    (_truncate, {}, r"model\.safetensors: not a readable safetensors file"),
    ({}, {"max_length": 65}, r"max_length 65 is beyond what the encoder's 64 positions allow"),
], ids=["roberta", "malformed-json", "heads", "layers", "corrupt", "truncated", "max-length"])
def test_a_bad_encoder_dir_is_one_line_naming_it(tmp_path: Path, change: object,
                                                 fit_changes: dict, expected: str) -> None:
    """What ``fintweet train --encoder DIR`` gets: a :class:`UserError` the CLI prints as one
    line (exit 2), raised before any training."""
    checkpoint = tmp_path / "checkpoint"
    if isinstance(change, dict):
        encoder_dir(checkpoint, **change)
    else:
        encoder_dir(checkpoint)
        assert callable(change)
        change(checkpoint)
    with pytest.raises(EncoderError, match=expected) as info:
        _fit(checkpoint, **fit_changes)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    message = user_error_message(info.value)
    assert message is not None and "\n" not in message and str(checkpoint) in message


def test_max_length_is_checked_against_the_positions(tmp_path: Path) -> None:
    """Batches pad to a multiple of 8, so 60 positions hold at most max_length 56: 57 would pad
    to 64 and fail only on a long enough tweet. Refused at fit and at load; at the limit, long
    inputs are served by Keras and ONNX alike."""
    checkpoint = encoder_dir(tmp_path / "encoder", max_position_embeddings=60)
    with pytest.raises(EncoderError, match=r"max_length 57 .* 60 positions .*at most 56\)"):
        _fit(checkpoint, max_length=57)
    model = _fit(checkpoint, max_length=56)
    (tmp_path / "model").mkdir()
    model.save(tmp_path / "model")
    config = model.get_config()
    for runtime in ("keras", "onnx"):
        loaded = TransformerModel.load(tmp_path / "model", {**config, "runtime": runtime})
        assert loaded.predict_proba(TEXTS).topic.shape == (len(TEXTS), 20)
    with pytest.raises(models.ArtifactError, match=r"max_length 57 .*at most 56\) \(config"):
        TransformerModel.load(tmp_path / "model", {**config, "max_length": 57})
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        TransformerConfig(max_length=1)


def _artifact(tmp_path: Path, pooler: bool, **changes: object) -> Path:
    return write_artifact(tmp_path / "models", "transformer",
                          lambda d: artifact_files(d, pooler, **changes), metrics={},
                          config=_config(), data_fingerprint="test")


def test_a_runtime_that_cannot_be_built_is_an_artifact_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``models.load`` (the worker's) builds the serving runtime at once: any failure there is
    one line naming the artifact and the other runtime to try."""
    version = _artifact(tmp_path, pooler=False)

    def refuse(*args: object, **kwargs: object) -> object:
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : node l0_attention\nmore detail")

    monkeypatch.setattr(transformer_module, "session_for", refuse)
    with pytest.raises(models.ArtifactError) as info:
        models.load(version, transformer_runtime="onnx-int8")
    message = str(info.value)
    assert message.startswith(f"{version}: cannot serve its transformer with runtime onnx-int8")
    assert "\n" not in message and "--transformer-runtime keras" in message
    monkeypatch.undo()
    served = models.load(version, transformer_runtime="onnx-int8").predict_proba(TEXTS)
    assert served.topic.shape == (len(TEXTS), 20)
