"""Subcommands of `flextok-hf`; see `flextok_hf.cli`."""

import argparse
import importlib


def register_trainer_command(subparsers, name: str, help: str, module: str):
    """Registers `flextok-hf <name>`, whose flags all go to `HfArgumentParser` in `flextok_hf.<module>.main(argv)`.

    The parser only collects them (prefix char `+`, so `--x` stays a value) and `module` is imported when the command
    runs, which keeps transformers' Trainer imports out of `flextok-hf --help`."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=f"Run `flextok-hf {name} --help` for all flags.",
        add_help=False,
        prefix_chars="+",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="HfArgumentParser flags (see --help)")
    parser.set_defaults(func=lambda args: importlib.import_module(f"flextok_hf.{module}").main(list(args.args)))
    return parser
