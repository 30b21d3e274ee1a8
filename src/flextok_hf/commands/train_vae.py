"""`flextok-hf train-vae`: stage-0 training of a small diffusers `AutoencoderKL` with `transformers.Trainer`.

Every flag of `VAEModelArguments`, `VAEDataArguments` and `VAETrainingArguments` (which includes all of
`transformers.TrainingArguments`) is accepted; `flextok-hf train-vae --help` lists them. The flags are parsed by
`HfArgumentParser` inside `run`, so this parser only collects them (its prefix char is `+`, so `--x` stays a value).
"""

import argparse


def register(subparsers):
    parser = subparsers.add_parser(
        "train-vae",
        help="Train a small AutoencoderKL (FlexTok stage 0); the result plugs into train-tokenizer --vae_name_or_path.",
        description="Run `flextok-hf train-vae --help` for all flags.",
        add_help=False,
        prefix_chars="+",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="HfArgumentParser flags (see --help)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.vae import main

    return main(list(args.args))
