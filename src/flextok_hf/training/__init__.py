"""Training utilities (collators, trainers, callbacks) for flextok_hf."""

from .callbacks import EMACallback, LogHistoryCallback, SampleGridCallback, reconstruction_grid
from .collator import ImageCollator, LatentCollator, cache_latents
from .prior import PRIOR_TRAINING_DEFAULTS, FlexTokARDataCollator, build_prior_trainer, train_prior
from .tokenizer import (
    FlexTokTrainer,
    TokenizerDataArguments,
    TokenizerModelArguments,
    TokenizerTrainingArguments,
    train_tokenizer,
)

__all__ = [
    "PRIOR_TRAINING_DEFAULTS",
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
]
