"""Training utilities (collators, trainers, callbacks) for flextok_hf."""

from .arguments import FlexTokTrainingArguments
from .callbacks import EMACallback, LogHistoryCallback, SampleGridCallback, reconstruction_grid
from .collator import ImageCollator, LatentCollator, cache_latents
from .lora import add_lora, finetune_lora, load_lora, save_lora
from .pretokenize import load_pretokenized, merge_datasets, pretokenize, pretokenize_dataset
from .prior import (
    PRIOR_TRAINING_DEFAULTS,
    FlexTokARDataCollator,
    PriorTrainingArguments,
    build_prior_trainer,
    train_prior,
    train_prior_from_args,
)
from .repa import REPATeacher
from .tokenizer import (
    FlexTokTrainer,
    TokenizerDataArguments,
    TokenizerModelArguments,
    TokenizerTrainingArguments,
    train_tokenizer,
)
from .vae import VAETrainingArguments, train_vae

__all__ = [
    "FlexTokTrainingArguments",
    "PriorTrainingArguments",
    "VAETrainingArguments",
    "train_prior_from_args",
    "PRIOR_TRAINING_DEFAULTS",
    "REPATeacher",
    "add_lora",
    "finetune_lora",
    "load_lora",
    "save_lora",
    "train_vae",
    "FlexTokARDataCollator",
    "build_prior_trainer",
    "train_prior",
    "EMACallback",
    "FlexTokTrainer",
    "ImageCollator",
    "LatentCollator",
    "LogHistoryCallback",
    "SampleGridCallback",
    "TokenizerDataArguments",
    "TokenizerModelArguments",
    "TokenizerTrainingArguments",
    "cache_latents",
    "reconstruction_grid",
    "train_tokenizer",
    "load_pretokenized",
    "merge_datasets",
    "pretokenize",
    "pretokenize_dataset",
]
