"""`flextok-hf finetune-lora`: adapt a trained FlexTok tokenizer to new data with LoRA adapters (peft + Trainer).

Every flag of `LoraModelArguments`, `TokenizerDataArguments` and `LoraTrainingArguments` (which includes all of
`transformers.TrainingArguments`) is accepted; `flextok-hf finetune-lora --help` lists them. The flags are parsed by
`HfArgumentParser` inside `run`, so this parser only collects them (its prefix char is `+`, so `--x` stays a value).
"""

from . import register_trainer_command


def register(subparsers):
    register_trainer_command(
        subparsers,
        "finetune-lora",
        help="LoRA fine-tuning of a trained FlexTok tokenizer; saves only the adapter.",
        module="training.lora",
    )
