"""`flextok-hf train-vae`: stage-0 training of a small diffusers `AutoencoderKL` with `transformers.Trainer`.

Every flag of `VAEModelArguments`, `VAEDataArguments` and `VAETrainingArguments` (which includes all of
`transformers.TrainingArguments`) is accepted; `flextok-hf train-vae --help` lists them. The flags are parsed by
`HfArgumentParser` in `flextok_hf.training.vae.main` (see `register_trainer_command`).
"""

from . import register_trainer_command


def register(subparsers):
    register_trainer_command(
        subparsers,
        "train-vae",
        help="Train a small AutoencoderKL (FlexTok stage 0); the result plugs into train-tokenizer --vae_name_or_path.",
        module="training.vae",
    )
