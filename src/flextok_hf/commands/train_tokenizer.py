"""`flextok-hf train-tokenizer`: stage-1 FlexTok training with `transformers.Trainer`.

Every flag of `TokenizerModelArguments`, `TokenizerDataArguments` and `TokenizerTrainingArguments` (which includes all
of `transformers.TrainingArguments`) is accepted; `flextok-hf train-tokenizer --help` lists them. The flags are parsed
by `HfArgumentParser` inside `run`, so this parser only collects them (its prefix char is `+`, so `--x` stays a value).
"""

from . import register_trainer_command


def register(subparsers):
    register_trainer_command(
        subparsers,
        "train-tokenizer",
        help="Train a FlexTok tokenizer (stage 1) with transformers.Trainer (CPU, torchrun, accelerate).",
        module="training.tokenizer",
    )
