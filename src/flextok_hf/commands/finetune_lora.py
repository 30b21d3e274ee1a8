"""`flextok-hf finetune-lora`: adapt a trained FlexTok tokenizer to new data with LoRA adapters (peft + Trainer).

Every flag of `LoraModelArguments`, `TokenizerDataArguments` and `LoraTrainingArguments` (which includes all of
`transformers.TrainingArguments`) is accepted; `flextok-hf finetune-lora --help` lists them. The flags are parsed by
`HfArgumentParser` inside `run`, so this parser only collects them (its prefix char is `+`, so `--x` stays a value).
"""

import argparse


def register(subparsers):
    parser = subparsers.add_parser(
        "finetune-lora",
        help="LoRA fine-tuning of a trained FlexTok tokenizer; saves only the adapter.",
        description="Run `flextok-hf finetune-lora --help` for all flags.",
        add_help=False,
        prefix_chars="+",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="HfArgumentParser flags (see --help)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.lora import main

    return main(list(args.args))
