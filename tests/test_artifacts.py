"""The artifact format on its own (no TensorFlow): atomic versions, the ``current`` switch, and
clear errors for anything missing, incomplete or tampered with."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fintweet.core import artifacts
from fintweet.core.artifacts import (
    ArtifactError,
    load_arrays,
    read_artifact,
    resolve_version_dir,
    save_arrays,
    switch_current,
    write_artifact,
)
from fintweet.core.labels import label_map


def write_weights(directory: Path) -> None:
    save_arrays(directory / "weights.npz", {"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    (directory / "vocab.json").write_text(json.dumps({"terms": ["$tsla", "fed"]}))


def make(out: Path, kind: str = "toy", **kwargs: object) -> Path:
    return write_artifact(
        out, kind, write_weights, metrics={"accuracy": 0.5}, config={"alpha": 1},
        data_fingerprint="f" * 64, **kwargs,
    )


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    version_dir = make(tmp_path)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", version_dir.name)
    current = tmp_path / "toy" / "current"
    assert current.is_symlink() and os.readlink(current) == version_dir.name  # relative link
    info = read_artifact(tmp_path / "toy")
    assert info.path == version_dir.resolve()
    assert info.kind == "toy" and info.version == version_dir.name
    assert info.manifest["format_version"] == artifacts.FORMAT_VERSION
    assert info.manifest["data_fingerprint"] == "f" * 64
    assert set(info.manifest["files"]) == {
        "weights.npz", "vocab.json", "labels.json", "metrics.json", "config.json"
    }
    assert json.loads((version_dir / "labels.json").read_text()) == {
        "topic": label_map("topic"), "sentiment": label_map("sentiment")}
    assert load_arrays(version_dir / "weights.npz")["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    # No temp dirs or temp links left behind.
    left = sorted(p.name for p in (tmp_path / "toy").iterdir())
    assert left == sorted(["current", version_dir.name])


def test_three_ways_to_name_an_artifact_resolve_to_one_version(tmp_path: Path) -> None:
    version_dir = make(tmp_path).resolve()
    for path in (tmp_path / "toy", tmp_path / "toy" / "current", version_dir):
        assert resolve_version_dir(path) == version_dir


def test_newer_version_switches_current(tmp_path: Path) -> None:
    first = make(tmp_path)
    second = make(tmp_path)
    assert first != second
    assert read_artifact(tmp_path / "toy").path == second.resolve()
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted(
        ["current", first.name, second.name]
    )


def test_failed_write_leaves_current_on_the_previous_version(tmp_path: Path) -> None:
    good = make(tmp_path)

    def crash_half_way(directory: Path) -> None:
        (directory / "weights.npz").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_artifact(
            tmp_path, "toy", crash_half_way, metrics={}, config={}, data_fingerprint="0" * 64
        )
    assert read_artifact(tmp_path / "toy").path == good.resolve()
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted(["current", good.name])


def test_a_write_stopped_between_rename_and_switch_leaves_no_unpublished_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C after the rename into place, before ``current`` moved, left a complete version
    that no ``current`` named and the trainer said it had not published: the newest on disk,
    which ``models`` listed and the next prune kept as one a running train may still switch to.
    It is taken back out of the versions under the kind's lock: a prune in between would count
    it as the newest and remove the newest version that was published."""
    import fcntl
    import os

    good = make(tmp_path)
    new = tmp_path / "toy" / "20990101T000000Z-abcdef"
    checked, rename = artifacts.read_artifact, os.rename
    locked_while_taken_back: list[bool] = []

    def interrupted_at_the_switch(path: Path, *args: object, **kwargs: object) -> object:
        if Path(path) == new:
            raise KeyboardInterrupt
        return checked(path, *args, **kwargs)

    def watched_rename(source: Path, target: Path) -> None:
        if Path(source) == new:  # taken back: may a prune lock the kind now?
            probe = os.open(tmp_path / "toy", os.O_RDONLY)
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked_while_taken_back.append(False)
            except BlockingIOError:
                locked_while_taken_back.append(True)
            finally:
                os.close(probe)
        rename(source, target)

    monkeypatch.setattr(artifacts, "read_artifact", interrupted_at_the_switch)
    monkeypatch.setattr(artifacts.os, "rename", watched_rename)
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path, version=new.name)
    monkeypatch.undo()
    assert locked_while_taken_back == [True]
    assert read_artifact(tmp_path / "toy").path == good.resolve()
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted(["current", good.name])


# A writer that stops half way through its version, as `train` does when the kernel's OOM killer
# or a SIGKILL from a supervisor ends it: no except or finally of its own runs.
_STALLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fintweet.core.artifacts import write_artifact

    def half_then_wait(directory: Path) -> None:
        (directory / "weights.npz").write_bytes(b"half")
        print(directory, flush=True)
        time.sleep(600)

    write_artifact(Path(sys.argv[1]), "toy", half_then_wait, metrics={}, config={},
                   data_fingerprint="0" * 64)
""")


def test_a_killed_writers_temp_dir_is_removed_by_the_next_write_and_a_live_ones_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = make(tmp_path)
    kind_dir = tmp_path / "toy"
    writers, partial = [], []
    for _ in range(2):
        writer = subprocess.Popen([sys.executable, "-c", _STALLED_WRITER, str(tmp_path)],
                                  stdout=subprocess.PIPE, text=True)
        writers.append(writer)
        assert writer.stdout is not None
        partial.append(Path(writer.stdout.readline().strip()))
    dead, alive = partial
    try:
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait(timeout=30)
        assert dead.is_dir() and (dead / "weights.npz").exists()
        # An unlocked dir made this minute may be a writer's that has not locked it yet: kept.
        newer = make(tmp_path)
        assert dead.is_dir() and alive.is_dir()
        old = os.stat(dead).st_mtime - artifacts.ABANDONED_AFTER_S - 1
        for path in (dead, alive):
            os.utime(path, (old, old))
        latest = make(tmp_path)
        assert not dead.exists()
        assert alive.is_dir(), "the temp dir of a writer still running was removed"
        assert f"removed {dead}: a version whose writer stopped" in capsys.readouterr().err
        assert read_artifact(kind_dir).path == latest.resolve()
        assert {good.name, newer.name, latest.name} <= {p.name for p in kind_dir.iterdir()}
    finally:
        for writer in writers:
            writer.kill()
            writer.wait(timeout=30)


def test_a_temp_dir_its_writer_renames_while_it_is_looked_at_is_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the clean-up's open and its lock, the writer renames its finished version into
    place and lets go of the lock: the clean-up's lock then succeeds on a dir that is no longer
    a temp dir (a stat by name raised, and the other training run ended with it)."""
    import fcntl

    kind_dir = tmp_path / "toy"
    temp = kind_dir / ".tmp-20990101T000000Z-000000"
    temp.mkdir(parents=True)
    old = temp.stat().st_mtime - artifacts.ABANDONED_AFTER_S - 1
    os.utime(temp, (old, old))
    real_flock = fcntl.flock

    def writer_finishes_first(fd: int, operation: int) -> None:
        if temp.exists():
            os.rename(temp, kind_dir / "20990101T000000Z-000000")
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", writer_finishes_first)
    assert artifacts.remove_abandoned(kind_dir) == []
    assert (kind_dir / "20990101T000000Z-000000").is_dir()


def test_a_current_that_is_a_copied_directory_is_refused_before_writing(tmp_path: Path) -> None:
    """A models folder copied without links has a directory for ``current``, which
    ``os.replace`` cannot swap for a link: train used to fail with a traceback at the end."""
    import shutil

    good = make(tmp_path)
    current = tmp_path / "toy" / "current"
    current.unlink()
    shutil.copytree(good, current)
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(current))}: a directory, not the "
                                            r"link .* move it aside, then train again"):
        make(tmp_path)
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted(["current", good.name])


def test_current_cannot_point_at_an_incomplete_version(tmp_path: Path) -> None:
    good = make(tmp_path)
    partial = tmp_path / "toy" / "20990101T000000Z-000000"
    partial.mkdir()
    (partial / "model.keras").write_bytes(b"not finished")
    with pytest.raises(ArtifactError, match=r"no artifact\.json|neither a model version"):
        switch_current(tmp_path / "toy", partial.name)
    assert read_artifact(tmp_path / "toy").path == good.resolve()


def test_tampered_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    version_dir = make(tmp_path)
    target = version_dir / "vocab.json"
    target.write_text(json.dumps({"terms": ["$tsla", "fed", "extra"]}))
    with pytest.raises(ArtifactError, match=r"vocab\.json: contents do not match") as refused:
        read_artifact(version_dir)
    assert f"retrain with `fintweet train --models toy --out {tmp_path.resolve()}`" in str(
        refused.value)


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path: Path) -> None:
    """A loader reads files by name: one slipped in (or dropped from the list) after training
    would be read without its hash checked."""
    version_dir = make(tmp_path)
    (version_dir / "sub").mkdir()
    (version_dir / "sub" / "extra.npz").write_bytes(b"not from training")
    with pytest.raises(ArtifactError, match=r"sub/extra\.npz: not listed in artifact\.json"):
        read_artifact(version_dir)


def test_current_must_name_a_version_beside_it(tmp_path: Path) -> None:
    elsewhere = make(tmp_path / "elsewhere")  # a complete, self-consistent artifact
    kind_dir = tmp_path / "models" / "toy"
    kind_dir.mkdir(parents=True)
    (kind_dir / "current").symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match="outside"):
        read_artifact(kind_dir)
    assert read_artifact(elsewhere).path == elsewhere.resolve()  # itself, named directly


def test_missing_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    version_dir = make(tmp_path)
    (version_dir / "weights.npz").unlink()
    with pytest.raises(ArtifactError, match=r"weights\.npz: missing"):
        read_artifact(tmp_path / "toy")


def test_files_in_sub_dirs_are_hashed_and_names_leaving_the_dir_refused(tmp_path: Path) -> None:
    """A composite model (the ensemble) keeps each member in a sub-dir; the manifest covers
    those files too, and a manifest naming a path outside the version dir is refused."""

    def nested(directory: Path) -> None:
        (directory / "member").mkdir()
        write_weights(directory / "member")

    version_dir = write_artifact(tmp_path, "pair", nested, metrics={}, config={},
                                 data_fingerprint="f" * 64)
    files = read_artifact(version_dir).manifest["files"]
    assert {"member/weights.npz", "member/vocab.json"} <= set(files)
    (version_dir / "member" / "vocab.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"member/vocab\.json: contents do not match"):
        read_artifact(version_dir)

    for outside in ("../../escape.json", "/etc/passwd"):
        manifest = json.loads((version_dir / "artifact.json").read_text())
        manifest["files"] = {**files, outside: "0" * 64}
        (version_dir / "artifact.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match="points outside the artifact"):
            read_artifact(version_dir, verify=False)


def test_missing_manifest_means_incomplete(tmp_path: Path) -> None:
    version_dir = make(tmp_path, "linear")
    (version_dir / "artifact.json").unlink()
    with pytest.raises(ArtifactError, match=r"a version folder with no artifact\.json") as refused:
        read_artifact(version_dir)
    assert "not a model kind" not in str(refused.value)  # its name was taken for one
    assert str(refused.value).endswith(
        f"retrain with `fintweet train --models linear --out {version_dir.parent.parent}`")


def test_a_bad_copy_of_a_version_is_not_sent_to_train_its_folders_name(tmp_path: Path) -> None:
    """A version copied to ``copies/mymodel`` and then damaged was to be retrained with
    `fintweet train --models copies`, which is no kind: the kind is its manifest's."""
    version_dir = make(tmp_path / "models", "linear")
    copy = tmp_path / "copies" / "mymodel"
    shutil.copytree(version_dir, copy)
    (copy / "vocab.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"vocab\.json: contents do not match") as refused:
        read_artifact(copy)
    assert str(refused.value).endswith(
        "copy it again from the models folder it came from, or retrain with `fintweet train "
        "--models linear` and copy the new version")
    (copy / "artifact.json").write_text("{not json")  # no kind to read: none is made up
    with pytest.raises(ArtifactError, match=r"artifact\.json: not valid JSON") as unreadable:
        read_artifact(copy)
    assert "copies" not in str(unreadable.value).split("artifact.json")[-1]
    assert str(unreadable.value).endswith("retrain its kind with `fintweet train --models KIND`")


def test_corrupt_manifest_is_refused(tmp_path: Path) -> None:
    version_dir = make(tmp_path)
    (version_dir / "artifact.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"artifact\.json: not valid JSON"):
        read_artifact(version_dir)


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    version_dir = make(tmp_path)
    manifest = json.loads((version_dir / "artifact.json").read_text())
    manifest["format_version"] = 99
    (version_dir / "artifact.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 99 is not supported"):
        read_artifact(version_dir)


def topic_only_artifact(out: Path) -> Path:
    """An artifact as the topic-only fintweet wrote it: format 1, labels.json the topic map."""
    version_dir = make(out, "ann")
    (version_dir / "labels.json").write_text(json.dumps(label_map("topic")))
    manifest = json.loads((version_dir / "artifact.json").read_text())
    manifest["format_version"] = 1
    manifest["files"]["labels.json"] = artifacts.sha256_file(version_dir / "labels.json")
    (version_dir / "artifact.json").write_text(json.dumps(manifest))
    return version_dir


def test_topic_only_artifact_is_refused_naming_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fintweet import models
    from fintweet.cli.main import main

    topic_only_artifact(tmp_path)
    with pytest.raises(ArtifactError, match=r"topic-only model .* retrain with `fintweet train "
                                            rf"--models ann --out "
                                            rf"{re.escape(str(tmp_path.resolve()))}`"):
        models.load(tmp_path / "ann")
    csv_path = tmp_path / "eval.csv"
    csv_path.write_text("text,label\nFed hikes,1\n")
    assert main(["evaluate", "--model", str(tmp_path / "ann"), "--data", str(csv_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fintweet evaluate: error:") and "`fintweet train" in err
    assert len(err.strip().splitlines()) == 1


def test_nonexistent_and_dangling_paths_say_what_to_run(tmp_path: Path) -> None:
    """Each names the command that makes the missing artifact."""
    run = f"train one with `fintweet train --models cnn --out {tmp_path}`"
    with pytest.raises(ArtifactError, match="no such model artifact") as missing:
        read_artifact(tmp_path / "cnn")
    assert run in str(missing.value)
    (tmp_path / "ann").mkdir()
    with pytest.raises(ArtifactError, match=f"--models ann --out {tmp_path}`"):
        read_artifact(tmp_path / "ann")
    (tmp_path / "ann" / "current").symlink_to("20990101T000000Z-000000")
    for path in (tmp_path / "ann", tmp_path / "ann" / "current"):
        with pytest.raises(ArtifactError, match="dangling link") as dangling:
            read_artifact(path)
        assert f"--models ann --out {tmp_path}`" in str(dangling.value)
    kept = make(tmp_path, "ann")  # a version there: the link, not the model, is what is lost
    (tmp_path / "ann" / "current").unlink()
    (tmp_path / "ann" / "current").symlink_to("20990101T000000Z-000000")
    with pytest.raises(ArtifactError, match="dangling link") as repointable:
        read_artifact(tmp_path / "ann")
    assert f"`fintweet models --models {tmp_path} use ann {kept.name}`" in str(repointable.value)
    a_file = tmp_path / "models.txt"  # FINTWEET_MODELS_DIR naming a file: "--out" it was not
    a_file.write_text("")
    with pytest.raises(ArtifactError, match="is a file, not a models folder") as on_a_file:
        read_artifact(a_file / "ann")
    assert "fintweet train --models" not in str(on_a_file.value)


def test_a_missing_name_that_is_no_model_kind_is_not_sent_to_train(tmp_path: Path) -> None:
    """`fintweet train --models bogus` would only be refused in turn."""
    from fintweet import models

    assert tuple(models.KINDS) == artifacts.MODEL_KINDS
    for path in (tmp_path / "bogus", tmp_path / "bogus" / "current"):
        with pytest.raises(ArtifactError, match="'bogus' is not a model kind") as missing:
            read_artifact(path)
        assert "fintweet train" not in str(missing.value)
        assert all(kind in str(missing.value) for kind in models.KINDS)


def test_npz_with_pickles_is_neither_written_nor_read(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="dtype object"):
        save_arrays(tmp_path / "x.npz", {"bad": np.array([{"a": 1}], dtype=object)})
    np.savez(tmp_path / "pickled.npz", bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ArtifactError, match=r"pickled\.npz"):
        load_arrays(tmp_path / "pickled.npz")


def test_available_lists_kinds_with_a_current(tmp_path: Path) -> None:
    assert artifacts.available(tmp_path / "missing") == []
    make(tmp_path, "ann")
    (tmp_path / "cnn").mkdir()  # no current yet
    assert artifacts.available(tmp_path) == ["ann"]


def test_models_load_refuses_unknown_kind_and_bad_path(tmp_path: Path) -> None:
    from fintweet import models

    with pytest.raises(ArtifactError, match="no such model artifact"):
        models.load(tmp_path / "ann")
    make(tmp_path, "toy")
    with pytest.raises(ArtifactError, match="unknown model kind 'toy'"):
        models.load(tmp_path / "toy")
    assert models.available(tmp_path) == []  # 'toy' is not a model kind


def test_an_artifact_from_an_unknown_config_layout_is_an_artifact_error(tmp_path: Path) -> None:
    from fintweet.core.artifacts import sha256_file
    from fintweet.core.data import LabelledData
    from fintweet.models import load
    from fintweet.trainer.train import Splits, TaskSplit, train_models

    def task_data(task: str, words: list[str], ids: list[int]) -> TaskSplit:
        texts = [f"{word} {i}" for word in words for i in range(20)]
        labels = np.repeat(ids, 20)
        return TaskSplit.of(task, LabelledData(texts, labels, f"synthetic {task}"))

    splits = Splits(task_data("topic", ["fed rates hike", "oil price jumps"], [1, 6]),
                    task_data("sentiment", ["stock soars", "stock sinks"], [1, 0]))
    paths = train_models(splits, ["linear"], tmp_path)
    config_path = paths["linear"] / "config.json"
    config = json.loads(config_path.read_text())
    config["a_setting_from_the_future"] = 1
    config_path.write_text(json.dumps(config))
    # A consistent artifact from another version: its manifest hashes the config it wrote.
    manifest_path = paths["linear"] / "artifact.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["config.json"] = sha256_file(config_path)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="cannot rebuild the linear model"):
        load(paths["linear"])


def test_the_models_command_lists_rolls_back_and_prunes_versions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Training publishes a version per run; going back to an earlier one meant making the
    link by hand, and old versions (~160 MB an ANN) piled up with nothing to remove them."""
    from fintweet.cli.main import main

    names = [f"2026112{day}T100000Z-00000{day}" for day in range(1, 6)]
    for name in names:
        write_artifact(tmp_path, "toy", write_weights, version=name, data_fingerprint="f" * 64,
                       metrics={"topic": {"accuracy": 0.86}, "sentiment": {"accuracy": 0.83}},
                       config={})
    assert main(["models", "--models", str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "toy" in line]
    assert [row.split()[-6] for row in rows] == names[::-1]  # newest first
    assert rows[0].startswith("* ") and "0.8600" in rows[0] and "0.8300" in rows[0]

    assert main(["models", "--models", str(tmp_path), "use", "toy", names[1]]) == 0
    assert f"current → {names[1]} (was {names[4]})" in capsys.readouterr().out
    assert resolve_version_dir(tmp_path / "toy").name == names[1]
    assert main(["models", "--models", str(tmp_path), "use", "toy", "nope"]) == 2
    assert f"no version 'nope'; its versions, newest first: {names[4]}" in (
        capsys.readouterr().err)
    (tmp_path / "toy" / names[3] / "vocab.json").write_text("{}")  # tampered: not switched to
    assert main(["models", "--models", str(tmp_path), "use", "toy", names[3]]) == 2
    err = capsys.readouterr().err
    assert "vocab.json" in err and f"use toy {names[4]}`, the newest other) or retrain" in err
    assert resolve_version_dir(tmp_path / "toy").name == names[1]

    assert main(["models", "use", "toy", names[1], "--models", str(tmp_path)]) == 0
    assert "already current" in capsys.readouterr().out  # --models after the action too

    write_artifact(tmp_path, "toy", write_weights, version="before-the-retrain", config={},
                   data_fingerprint="f" * 64, metrics={})  # named by hand: kept, not counted
    switch_current(tmp_path / "toy", names[1])
    with pytest.raises(SystemExit) as refused:  # a usage error, as argparse's own
        main(["models", "--models", str(tmp_path), "prune", "toy", "--keep", "0"])
    assert refused.value.code == 2 and "--keep must be 1 or more" in capsys.readouterr().err
    assert main(["models", "--models", str(tmp_path), "prune", "toy", "--keep", "1"]) == 0
    assert "removed 3 version(s)" in capsys.readouterr().out
    # the newest, the current one, and the hand-named copy
    assert artifacts.versions(tmp_path / "toy") == ["before-the-retrain", names[4], names[1]]
    shutil.rmtree(tmp_path / "toy" / "before-the-retrain")

    # a current that names no version: which one to keep is unknown, so nothing is removed
    (tmp_path / "toy" / "current").unlink()
    (tmp_path / "toy" / "current").symlink_to("20991231T000000Z-000000")
    assert main(["models", "--models", str(tmp_path), "prune", "toy", "--keep", "1"]) == 2
    assert "names no version here" in capsys.readouterr().err
    assert artifacts.versions(tmp_path / "toy") == [names[4], names[1]]
    assert main(["models", "--models", str(tmp_path)]) == 0
    assert "current names '20991231T000000Z-000000', which is none of these" in (
        capsys.readouterr().out)
    assert main(["models", "--models", str(tmp_path / "nowhere")]) == 2
    assert "no such models folder" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["models", "--models", str(tmp_path / "a-file")]) == 2
    assert "a file, not a models folder" in capsys.readouterr().err
    assert main(["models", "--models", str(tmp_path), "prune", "other"]) == 2
    err = capsys.readouterr().err
    assert "no trained versions of 'other' (kinds with versions here: toy" in err
    assert "'other' is no model kind" in err  # not sent to `train --models other`
    assert main(["models", "--models", str(tmp_path), "use", "ann", "v1"]) == 2
    assert f"`fintweet train --models ann --out {tmp_path}` makes one" in capsys.readouterr().err


def test_switching_current_and_pruning_hold_the_kinds_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fintweet models use OLD` verifies OLD, then replaces the link; a `prune` run between the
    two read the newest as current and removed OLD, leaving ``current`` dangling and every
    worker's restart failing. Both now do their work under the kind's lock: each is checked to
    find it taken (by another open file, as another process would see it)."""
    import fcntl

    names = [f"2026112{day}T100000Z-00000{day}" for day in range(1, 4)]
    for name in names:
        write_artifact(tmp_path, "toy", write_weights, version=name, data_fingerprint="f" * 64,
                       metrics={}, config={})
    kind_dir = tmp_path / "toy"
    held: list[str] = []

    def lock_is_taken() -> bool:
        fd = os.open(kind_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def watched(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            held.append(f"{name} {'locked' if lock_is_taken() else 'UNLOCKED'}")
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(artifacts, "_switch_current",
                        watched("switch", artifacts._switch_current))
    monkeypatch.setattr(artifacts, "_prune_versions",
                        watched("prune", artifacts._prune_versions))
    artifacts.switch_current(kind_dir, names[0])  # what `fintweet models use` calls
    assert artifacts.prune_versions(kind_dir, keep=1) == [kind_dir / names[1]]
    assert held == ["switch locked", "prune locked"]
    assert not lock_is_taken()  # released after each
    assert resolve_version_dir(kind_dir).name == names[0]
    assert sorted(os.listdir(kind_dir)) == sorted(["current", names[0], names[2]])


def test_models_use_on_a_folder_copied_without_links_says_so_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cp -rL`` makes ``current`` a folder, which ``os.replace`` cannot put a link over: `use`
    ended in an IsADirectoryError traceback, and the listing said only that current named no
    version."""
    from fintweet.cli.main import main

    names = ["20261121T100000Z-000001", "20261122T100000Z-000002"]
    for name in names:
        write_artifact(tmp_path / "src", "toy", write_weights, version=name, metrics={},
                       config={}, data_fingerprint="f" * 64)
    copy = tmp_path / "cl"
    shutil.copytree(tmp_path / "src", copy, symlinks=False)  # as cp -rL copies it
    assert (copy / "toy" / "current").is_dir()
    assert main(["models", "--models", str(copy), "use", "toy", names[0]]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"{copy / 'toy' / 'current'}: a directory, not the link to the version in use (copied "
        f"without links?); move it aside, then run `fintweet models --models {copy} use toy "
        f"{names[0]}`")
    assert (copy / "toy" / "current").is_dir()
    assert main(["models", "--models", str(copy)]) == 0
    assert (f"toy         current is a folder, not the link to a version (copied without "
            f"links?); move it aside, then `fintweet models --models {copy} use toy VERSION`"
            in capsys.readouterr().out)


def test_prune_removes_killed_writers_temp_dirs_and_never_leaves_a_half_removed_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A two-hour-old temp dir of a killed training survived a prune (only the next training
    removed it), and a prune interrupted in the middle of a removal left a version with some
    of its files gone still listed, and pointable at."""
    import fcntl

    names = [f"2026112{day}T100000Z-00000{day}" for day in range(1, 5)]
    for name in names:
        write_artifact(tmp_path, "toy", write_weights, version=name, data_fingerprint="f" * 64,
                       metrics={}, config={})
    kind_dir = tmp_path / "toy"
    dead, alive = kind_dir / ".tmp-20261120T100000Z-00000a", kind_dir / ".tmp-20261120T100000Z-b"
    two_hours_ago = os.stat(kind_dir).st_mtime - 7200
    for temp in (dead, alive):
        temp.mkdir()
        (temp / "weights.npz").write_bytes(b"half")
        os.utime(temp, (two_hours_ago, two_hours_ago))
    writing = os.open(alive, os.O_RDONLY)  # a training still writing it holds its lock
    fcntl.flock(writing, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert artifacts.prune_versions(kind_dir, keep=3) == [kind_dir / names[0]]
        assert not dead.exists(), "a killed training's temp dir was left"
        assert f"removed {dead}: a version whose writer stopped" in capsys.readouterr().err
        assert alive.is_dir(), "a running training's temp dir was removed"

        def interrupted(path: Path, *args: Any, **kwargs: Any) -> None:
            (Path(path) / "vocab.json").unlink()
            raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(shutil, "rmtree", interrupted)
            with pytest.raises(KeyboardInterrupt):
                artifacts.prune_versions(kind_dir, keep=2)
        assert artifacts.versions(kind_dir) == [names[3], names[2]]  # not the half-removed one
        for left in kind_dir.glob(".tmp-*-removed-*"):  # what the interruption left
            os.utime(left, (two_hours_ago, two_hours_ago))
        assert artifacts.prune_versions(kind_dir, keep=1) == [kind_dir / names[2]]
        assert sorted(os.listdir(kind_dir)) == sorted(["current", names[3], alive.name])
    finally:
        os.close(writing)


def test_hand_edited_files_are_one_line_errors_naming_the_file_and_what_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Edited with their hashes updated to match: a head's metrics not an object was an
    AttributeError traceback, a format version "2" was said to be version 2 unsupported by a
    fintweet that reads version 2, a garbage weights file was to be read with pickles allowed."""
    from fintweet.cli.main import main
    from fintweet.core.artifacts import sha256_file
    from fintweet.core.data import LabelledData
    from fintweet.models import load
    from fintweet.models.linear import ARRAYS_FILE
    from fintweet.trainer.train import Splits, TaskSplit, train_models

    def task_data(task: str, words: list[str], ids: list[int]) -> TaskSplit:
        texts = [f"{word} {i}" for word in words for i in range(20)]
        return TaskSplit.of(task, LabelledData(texts, np.repeat(ids, 20), f"synthetic {task}"))

    version = train_models(Splits(task_data("topic", ["fed rates hike", "oil jumps"], [1, 6]),
                                  task_data("sentiment", ["stock soars", "stock sinks"], [1, 0])),
                           ["linear"], tmp_path)["linear"]
    capsys.readouterr()  # the training's progress
    manifest_path = version / "artifact.json"
    manifest = json.loads(manifest_path.read_text())
    retrain = f"retrain with `fintweet train --models linear --out {version.parent.parent}`"

    def edit(name: str, content: bytes, **entries: Any) -> None:
        (version / name).write_bytes(content)
        files = {**manifest["files"], name: sha256_file(version / name)}
        manifest_path.write_text(json.dumps({**manifest, "files": files, **entries}))

    metrics = (version / "metrics.json").read_bytes()
    edit("metrics.json", json.dumps({**json.loads(metrics), "topic": "x"}).encode())
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(version))}/metrics\.json: 'topic' "
                                            r"must be a JSON object .*, not 'x'") as refused:
        load(version)
    assert str(refused.value).endswith(retrain)
    edit("metrics.json", metrics, format_version="2")
    with pytest.raises(ArtifactError, match=r"artifact\.json: format version '2' is no whole "
                                            r"number .* this fintweet reads version 2;") as old:
        load(version)
    assert str(old.value).endswith(retrain)
    edit(ARRAYS_FILE, b"garbage, not weights")
    csv_path = tmp_path / "eval.csv"
    csv_path.write_text("text,label\nFed hikes,1\n")
    assert main(["evaluate", "--model", str(version), "--data", str(csv_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{version / ARRAYS_FILE}: not a valid weights file (no .npz archive); "
                        "copy the model again, or retrain it") and "pickle" not in err
    assert len(err.splitlines()) == 1


def test_a_new_version_comes_into_place_and_current_under_one_hold_of_the_kinds_lock(
        tmp_path: Path) -> None:
    """Renamed into place before the lock was taken for the switch, a version could be seen, and
    removed, by a prune (which keeps the newest by name, sorted only to the second) before
    `current` named it; the training then failed after its work, its model gone."""
    import threading

    make(tmp_path, version="20260101T000000Z-aaaaaa")
    kind_dir = tmp_path / "toy"
    written: list[Path] = []
    with artifacts.kind_locked(kind_dir):
        writer = threading.Thread(target=lambda: written.append(
            make(tmp_path, version="20260101T000001Z-bbbbbb")))
        writer.start()
        writer.join(timeout=2)
        assert writer.is_alive()  # waiting for the lock, its version not yet in place
        assert artifacts.versions(kind_dir) == ["20260101T000000Z-aaaaaa"]
    writer.join(timeout=30)
    assert written and os.readlink(kind_dir / "current") == "20260101T000001Z-bbbbbb"

