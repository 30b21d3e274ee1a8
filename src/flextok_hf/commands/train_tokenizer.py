"""`flextok-hf train-tokenizer`: stage-1 FlexTok training with `transformers.Trainer`.

Every flag of `TokenizerModelArguments`, `TokenizerDataArguments` and `TokenizerTrainingArguments` (which includes all
of `transformers.TrainingArguments`) is accepted; `flextok-hf train-tokenizer --help` lists them. The flags are parsed
by `HfArgumentParser` inside `run`, so this parser only collects them (its prefix char is `+`, so `--x` stays a value).
"""

import argparse


def register(subparsers):
    parser = subparsers.add_parser(
        "train-tokenizer",
        help="Train a FlexTok tokenizer (stage 1) with transformers.Trainer (CPU, torchrun, accelerate).",
        description="Run `flextok-hf train-tokenizer --help` for all flags.",
        add_help=False,
        prefix_chars="+",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="HfArgumentParser flags (see --help)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.tokenizer import main

    return main(list(args.args))
