"""Arguments of `flextok-hf train-tokenizer` (and `finetune-lora`): the model, the data and the training recipe."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.trainer_utils import IntervalStrategy

from ..argument_parser import normalize_int_list_fields
from ..configuration_flextok import FlexTokConfig
from .arguments import FlexTokTrainingArguments
from .collator import CACHE_DTYPES
from .recipe import FlexTokRecipe

TOKENIZER_PRESETS = {
    "tiny": FlexTokConfig.tiny,
    "cpu_32px": FlexTokConfig.cpu_32px,
    "d12_d12": FlexTokConfig.d12_d12,
    "d18_d18": FlexTokConfig.d18_d18,
    "d18_d28": FlexTokConfig.d18_d28,
}
ARCHITECTURE_OVERRIDES = (
    "image_size",
    "patch_size",
    "num_registers",
    "fsq_levels",
    "encoder_hidden_size",
    "encoder_num_layers",
    "encoder_head_dim",
    "decoder_hidden_size",
    "decoder_num_layers",
    "decoder_head_dim",
    "normalize_registers",
)
OBJECTIVE_OVERRIDES = (
    "nested_dropout_mode",
    "null_condition_dropout_prob",
    "x0_loss_weight",
    "logit_normal_mean",
    "logit_normal_std",
    "uniform_sigma_fraction",
)
REPA_OVERRIDES = ("repa_layer", "repa_loss_weight", "repa_projector_dim")


@dataclass
class TokenizerModelArguments:
    """Which model to train. Overrides left at None keep the preset's (or the loaded model's) value."""

    config: str = field(default="tiny", metadata={"help": f"Preset {sorted(TOKENIZER_PRESETS)} or a config JSON."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "A FlexTokModel folder to fine-tune."})
    vae_name_or_path: str | None = field(
        default=None, metadata={"help": "A diffusers AutoencoderKL folder whose weights (and config) the model uses."}
    )
    image_size: int | None = field(default=None, metadata={"help": "Image side in pixels."})
    patch_size: int | None = None
    num_registers: int | None = field(default=None, metadata={"help": "K, the maximum number of tokens."})
    fsq_levels: list[int] | None = field(default=None, metadata={"help": "FSQ levels, e.g. 8,5,5,5."})
    encoder_hidden_size: int | None = None
    encoder_num_layers: int | None = None
    encoder_head_dim: int | None = None
    decoder_hidden_size: int | None = None
    decoder_num_layers: int | None = None
    decoder_head_dim: int | None = None
    nested_dropout_mode: str | None = field(default=None, metadata={"help": "uniform, pow2 or uniform_pow2."})
    null_condition_dropout_prob: float | None = None
    x0_loss_weight: float | None = field(default=None, metadata={"help": "Weight of the auxiliary x0 MSE loss."})
    logit_normal_mean: float | None = field(
        default=None,
        metadata={
            "help": "Mean of the logit-normal noise-level distribution (> 0 favours high noise, where the "
            "decoder must rely on the tokens; 0 = the paper's)."
        },
    )
    logit_normal_std: float | None = field(default=None, metadata={"help": "Std of the logit-normal noise levels."})
    uniform_sigma_fraction: float | None = field(
        default=None, metadata={"help": "Share of samples with sigma ~ U(0, 1) instead of logit-normal (0 = paper)."}
    )
    normalize_registers: bool | None = field(
        default=None, metadata={"help": "LayerNorm the decoder's register tokens after the code projection."}
    )
    vae_scaling_factor: float | None = field(
        default=None, metadata={"help": "Latent scale (default: the VAE config's `scaling_factor`, else 1)."}
    )
    repa_teacher: str | None = field(
        default=None,
        metadata={
            "help": "REPA teacher: a local transformers ViT/DINOv2 folder or 'flextok_classifier'. Off if unset."
        },
    )
    repa_teacher_layer: int = field(default=-1, metadata={"help": "Teacher layer (-1: last_hidden_state)."})
    repa_teacher_image_size: int | None = field(default=None, metadata={"help": "Teacher input side in pixels."})
    repa_layer: int | None = field(default=None, metadata={"help": "Decoder block aligned by REPA (default 1)."})
    repa_loss_weight: float | None = field(default=None, metadata={"help": "REPA weight (config default 0.5)."})
    repa_projector_dim: int | None = field(default=None, metadata={"help": "Hidden size of the REPA projector MLP."})

    def __post_init__(self):
        normalize_int_list_fields(self)


@dataclass
class TokenizerDataArguments:
    dataset: str = field(
        default="mnist",
        metadata={
            "help": "Bundled name(s) (comma-separated to concatenate), an image folder, a saved dataset or a Hub id."
        },
    )
    train_split: str = "train"
    eval_split: str | None = field(
        default=None, metadata={"help": "Eval split; default 'test' when the dataset has one; 'none' disables eval."}
    )
    max_train_samples: int | None = None
    max_eval_samples: int | None = 256
    image_column: str = "image"
    random_flip: bool = field(default=False, metadata={"help": "Random horizontal flips."})
    cache_latents: bool = field(default=False, metadata={"help": "Run the frozen VAE once and train on the cache."})
    cache_dtype: str = field(default="float32", metadata={"help": f"Cache dtype, one of {CACHE_DTYPES}."})


@dataclass
class TokenizerTrainingArguments(FlexTokTrainingArguments):
    """[`FlexTokTrainingArguments`] with the tokenizer recipe, plus EMA, sample-grid and eval-PSNR options.

    On CPUs without native bf16 the automatic `bf16` stays off (emulated bf16 autocast runs, but slower).
    """

    learning_rate: float = 3e-4
    weight_decay: float = 0.05
    adam_beta2: float = 0.99
    logging_steps: float = 10
    eval_strategy: IntervalStrategy | str = "steps"
    eval_steps: float | None = field(default=0.25, metadata={"help": "Eval interval (a float < 1: share of steps)."})
    save_steps: float = 0.25
    save_total_limit: int | None = 2
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay of the weights; 0 disables the EMA."})
    ema_use_warmup: bool = field(default=True, metadata={"help": "Ramp the EMA decay as (1+n)/(10+n)."})
    num_sample_images: int = field(default=8, metadata={"help": "Rows of the sample grids; 0 disables them."})
    sample_every_n_steps: float = field(default=0.25, metadata={"help": "Grid interval (float < 1: share of steps)."})
    sample_budgets: list[int] | None = field(
        default=None, metadata={"help": "Budgets of the sample grids, e.g. 1,2,4 (default 1,2,4..K)."}
    )
    sample_num_inference_steps: int = 20
    sample_guidance_scale: float = 1.0
    eval_psnr_images: int = field(default=16, metadata={"help": "Eval images reconstructed for eval_psnr; 0 = off."})
    eval_psnr_num_inference_steps: int = 8
    eval_psnr_guidance_scale: float = 1.0
    eval_diagnostic: bool = field(
        default=True,
        metadata={"help": "Log the token-reliance diagnostic (RF loss with true / shuffled / null registers)."},
    )
    deterministic_steps: int = field(
        default=0, metadata={"help": "Warm start: steps with sigma = 1, k = K, no null condition (an autoencoder)."}
    )
    deterministic_anneal_steps: int = field(
        default=0, metadata={"help": "Steps over which the deterministic share falls to `deterministic_fraction`."}
    )
    deterministic_fraction: float = field(
        default=0.0, metadata={"help": "Share of deterministic samples kept after the anneal."}
    )
    nested_dropout_start_step: int = field(default=0, metadata={"help": "k = K for every sample before this step."})
    deterministic_nested_dropout: bool = field(
        default=False,
        metadata={"help": "After `nested_dropout_start_step`, deterministic samples keep their nested-dropout k."},
    )
    feature_matching_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the feature-matching term: MSE between the shipped classifier's features of the "
            "one-step estimate x0_hat and of the target image (pixel-space or VAE-decoded)."
        },
    )
    feature_matching_network: str | None = field(
        default=None, metadata={"help": "Classifier folder for feature matching (default: the shipped one)."}
    )

    def recipe(self) -> FlexTokRecipe:
        """The step-dependent objective schedule these arguments describe."""
        return FlexTokRecipe(
            deterministic_steps=self.deterministic_steps,
            deterministic_anneal_steps=self.deterministic_anneal_steps,
            deterministic_fraction=self.deterministic_fraction,
            nested_dropout_start_step=self.nested_dropout_start_step,
            deterministic_nested_dropout=self.deterministic_nested_dropout,
        )

    def __post_init__(self):
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1), got {self.ema_decay}.")
        if self.feature_matching_weight < 0:
            raise ValueError(f"`feature_matching_weight` must be >= 0, got {self.feature_matching_weight}.")
        self.recipe()  # validates the recipe fields
        super().__post_init__()


__all__ = [
    "ARCHITECTURE_OVERRIDES",
    "OBJECTIVE_OVERRIDES",
    "REPA_OVERRIDES",
    "TOKENIZER_PRESETS",
    "TokenizerDataArguments",
    "TokenizerModelArguments",
    "TokenizerTrainingArguments",
]
