"""The worker's start-up line about devices, in a fresh interpreter each time (what is imported
is the point)."""

from __future__ import annotations

import subprocess
import sys

NO_TENSORFLOW = "import sys; sys.modules['tensorflow'] = None  # as on a JAX or PyTorch machine\n"


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_without_a_keras_model_nothing_is_imported_and_no_tensorflow_is_needed() -> None:
    out = run(NO_TENSORFLOW + "from fintweet.worker.device import describe_devices\n"
              "print(describe_devices()); print('keras' in sys.modules)")
    assert out.splitlines() == ["inference on CPU (the model does not use Keras)", "False"]


def test_with_keras_loaded_it_names_the_backend_it_asked() -> None:
    out = run("import keras\nfrom fintweet.worker.device import describe_devices\n"
              "print(describe_devices()); print(keras.backend.backend())")
    line, backend = out.splitlines()
    assert line.startswith("inference on ") and line.endswith(f"Keras on {backend})")


def test_training_reads_its_csvs_without_pydantic(tmp_path, shared_data_dir) -> None:
    """The GPU machine runs `fintweet train` with only Keras carried in (bench/gpu_run.sh); it
    has no pydantic to count on. Reading a CSV checked each text with the schema module's
    check, which imported pydantic for the trainer too."""
    code = ("import sys; sys.modules['pydantic'] = None  # as on the GPU machine\n"
            "from fintweet.cli.main import main\n"
            f"code = main(['train', '--models', 'linear', '--max-rows', '300', '--data-dir', "
            f"{str(shared_data_dir)!r}, '--out', {str(tmp_path)!r}, '--no-refit'])\n"
            "print(code, 'pydantic' in sys.modules and sys.modules['pydantic'] is not None)\n")
    assert run(code).splitlines()[-1] == "0 False"
    assert (tmp_path / "linear" / "current" / "trained_rows.npz").is_file()
