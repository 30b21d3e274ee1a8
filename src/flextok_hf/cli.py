"""The `flextok-hf` command line.

Each subcommand lives in `flextok_hf/commands/<name>.py` and exposes `register(subparsers)`, which adds its
parser and sets `func` to the function to run. Heavy imports stay inside those functions so that `--help` is fast.
"""

import argparse
import importlib
import sys

# Module names under flextok_hf.commands, in the order they appear in `--help`.
COMMAND_MODULES = (
    "showcase",
    "convert_official",
    "reconstruct",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flextok-hf", description="FlexTok tokenizers, priors and tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"flextok_hf.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
