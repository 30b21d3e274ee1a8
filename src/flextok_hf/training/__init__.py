"""Training utilities (collators, trainers, callbacks) for flextok_hf."""

from .prior import PRIOR_TRAINING_DEFAULTS, FlexTokARDataCollator, build_prior_trainer, train_prior

__all__ = ["PRIOR_TRAINING_DEFAULTS", "FlexTokARDataCollator", "build_prior_trainer", "train_prior"]
