"""Stage-1 training of the FlexTok tokenizer with `transformers.Trainer`.

```python
from flextok_hf.training import train_tokenizer

trainer = train_tokenizer({"config": "tiny", "dataset": "digits", "output_dir": "out", "max_steps": 200})
# or: train_tokenizer(["--config", "tiny", "--dataset", "digits", "--output_dir", "out", "--max_steps", "200"])
```

The same entry point runs on one CPU, under `torchrun` and under `accelerate launch` (see `LAUNCH_DOCS`). `output_dir`
ends up with the final model (EMA weights unless `--ema_decay 0`) + image processor, `checkpoint-<step>/` folders
(each with `ema.safetensors`), `samples/step-XXXXXX.png` grids, `log_history.json` and `loss_curve.png`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from datasets import concatenate_datasets
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.hf_argparser import string_to_bool
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint

from ..configuration_flextok import FlexTokConfig
from ..data import load_image_dataset
from ..diagnostics import flatten_token_reliance, token_reliance
from ..image_processing_flextok import FlexTokImageProcessor
from ..modeling_flextok import FlexTokModel, count_parameters
from .callbacks import EMACallback, LogHistoryCallback, SampleGridCallback, reconstruction_psnr
from .collator import CACHE_DTYPES, ImageCollator, LatentCollator, cache_latents
from .recipe import FlexTokRecipe
from .repa import REPATeacher, default_repa_layer

logger = logging.getLogger(__name__)

LAUNCH_DOCS = """\
Single process (CPU or one GPU):
    flextok-hf train-tokenizer --config cpu_32px --dataset mnist --output_dir runs/mnist32 --max_steps 3000

DDP on one machine (8 GPUs), with accelerate or torchrun:
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 -m flextok_hf.cli train-tokenizer \\
        --config d12_d12 --vae_name_or_path path/to/vae --dataset path/to/imagenet --output_dir runs/d12 --bf16
    torchrun --nproc_per_node 8 -m flextok_hf.cli train-tokenizer --config d12_d12 ...

DDP on CPU processes (gloo): only torchrun starts several CPU processes (`accelerate launch --cpu` starts one),
and `use_cpu` must be on (the default when no accelerator is found):
    torchrun --standalone --nproc_per_node 2 -m flextok_hf.cli train-tokenizer --config tiny --dataset digits ...

Multi-node (run on every node):
    accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank $NODE_RANK \\
        --main_process_ip $MASTER_ADDR --main_process_port 29500 -m flextok_hf.cli train-tokenizer ...

FSDP: `accelerate launch --config_file fsdp.yaml -m flextok_hf.cli train-tokenizer ...` with
    compute_environment: LOCAL_MACHINE
    distributed_type: FSDP
    mixed_precision: bf16
    num_machines: 1
    num_processes: 8
    fsdp_config:
      fsdp_version: 2
      fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
      fsdp_transformer_layer_cls_to_wrap: FlexTokBlock,FlexTokAdaLNBlock
      fsdp_state_dict_type: SHARDED_STATE_DICT
      fsdp_reshard_after_forward: true
      fsdp_cpu_ram_efficient_loading: true
Under FSDP the EMA, the sample grids and the eval PSNR are switched off (they need unsharded weights); the final
model is written by `trainer.save_model()`.
"""


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
    fsq_levels: str | None = field(default=None, metadata={"help": "Comma-separated FSQ levels, e.g. 8,5,5,5."})
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
class TokenizerTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults for FlexTok on small machines, plus EMA, sample-grid and eval-PSNR options.

    `bf16` and `use_cpu` default to None = automatic: `use_cpu` when no accelerator is present (this is also what makes
    `torchrun` start real gloo DDP on CPUs), and bf16 autocast where the hardware computes in bf16 natively (CUDA with
    bf16, or CPUs with AVX512-BF16 / AMX). On CPUs without it, bf16 autocast runs but is emulated and slower.
    """

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False (the collator reads images)."}
    )
    label_names: list[str] = field(
        default_factory=list, metadata={"help": "Must stay [] (the model returns the loss)."}
    )
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (default: when natively supported)."})
    use_cpu: bool | None = field(default=None, metadata={"help": "Train on CPU (default: when no accelerator)."})
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
    sample_budgets: str | None = field(default=None, metadata={"help": "Comma-separated budgets (default 1,2,4..K)."})
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
        if self.use_cpu is None:
            self.use_cpu = not torch.accelerator.is_available()
        if self.bf16 is None:
            self.bf16 = not self.fp16 and native_bf16_available(self.use_cpu)
        if self.remove_unused_columns or self.label_names:
            raise ValueError(
                "FlexTok training needs `remove_unused_columns=False` and `label_names=[]`, got "
                f"{self.remove_unused_columns!r} and {self.label_names!r}."
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1), got {self.ema_decay}.")
        if self.feature_matching_weight < 0:
            raise ValueError(f"`feature_matching_weight` must be >= 0, got {self.feature_matching_weight}.")
        self.recipe()  # validates the recipe fields
        super().__post_init__()


def native_bf16_available(cpu: bool) -> bool:
    """True where bf16 matmuls run natively: CUDA devices with bf16, or (on Linux) CPUs with AVX512-BF16 or AMX."""
    if not cpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# ----------------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------------
class FlexTokTrainer(Trainer):
    """`Trainer` that also reports reconstruction PSNR on fixed eval images.

    `evaluate()` returns (and logs to `state.log_history`) `eval_loss` from the model's forward (`label_names=[]`,
    `return_loss=True`), plus `eval_psnr` (the current weights) and, while an [`EMACallback`] is training,
    `eval_psnr_ema`. The eval loss runs under a forked RNG seeded with `args.seed`, so it is comparable between
    evaluations and leaves the training RNG (and thus exact resumption) untouched. `train(resume_from_checkpoint=...)`
    also tells the EMA callback which checkpoint to restore from.

    Training logs also carry the mean of each loss term since the last log (`rf_loss`, and `x0_loss` / `repa_loss`
    when active; main process only).

    Args (besides Trainer's):
        psnr_images: `[N, 3, S, S]` in [-1, 1], or None to skip the PSNR.
        psnr_num_inference_steps, psnr_guidance_scale, psnr_seed: decoder settings of the PSNR reconstructions.
        repa_teacher: a frozen [`REPATeacher`] (or any module mapping `pixel_values` to `[B, N', F]` features); its
            features of each batch are passed to the model as `repa_target`. It is not part of the model, so it is
            never saved with it.
        recipe: a [`FlexTokRecipe`]: the training draws (sigmas, keep_k, null condition) of each step follow it.
        feature_network / feature_matching_weight: a frozen module mapping images `[B, 3, H, W]` in [-1, 1] to
            features `[B, F]`; adds `weight * MSE(features(x0_hat), features(x0))` (`feature_loss` in the logs),
            where x0_hat = x_t - sigma * v is the decoder's one-step estimate (decoded by the VAE if there is one).
        diagnostic: log the token-reliance diagnostic ([`token_reliance`]) on the PSNR images at each evaluation.
    """

    def __init__(
        self,
        *args,
        psnr_images=None,
        psnr_num_inference_steps=8,
        psnr_guidance_scale=1.0,
        psnr_seed=0,
        repa_teacher=None,
        recipe: FlexTokRecipe | None = None,
        feature_network=None,
        feature_matching_weight: float = 0.0,
        diagnostic: bool = True,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.recipe = recipe if recipe is not None and recipe.is_active else None
        self.feature_network = None
        self.feature_matching_weight = float(feature_matching_weight)
        if feature_network is not None and self.feature_matching_weight > 0:
            self.feature_network = feature_network.to(self.args.device).eval().requires_grad_(False)
        self.diagnostic = diagnostic
        self.psnr_images = psnr_images
        self.psnr_num_inference_steps = psnr_num_inference_steps
        self.psnr_guidance_scale = psnr_guidance_scale
        self.psnr_seed = psnr_seed
        self.repa_teacher = repa_teacher.to(self.args.device) if repa_teacher is not None else None
        self._loss_terms: dict[str, list[torch.Tensor]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss; with a REPA teacher, its features of `pixel_values` are passed as `repa_target`."""
        if self.repa_teacher is not None:
            if "pixel_values" not in inputs:
                raise ValueError("REPA needs `pixel_values` in every batch (cached latents cannot feed the teacher).")
            inputs = {**inputs, "repa_target": self.repa_teacher(inputs["pixel_values"])}
        if model.training and self.recipe is not None:
            images = inputs.get("pixel_values", inputs.get("latents"))
            draws = self.recipe.draws(self.accelerator.unwrap_model(model), self.state.global_step, images.shape[0])
            inputs = {**inputs, **draws}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        terms = {name: outputs.get(name) for name in ("rf_loss", "x0_loss", "repa_loss")} if model.training else {}
        if model.training and self.feature_network is not None:
            terms["feature_loss"] = self.feature_matching_loss(model, outputs)
            loss = loss + self.feature_matching_weight * terms["feature_loss"]
        for name, value in terms.items():
            if value is not None:
                self._loss_terms.setdefault(name, []).append(value.detach().float())
        return (loss, outputs) if return_outputs else loss

    def feature_matching_loss(self, model, outputs) -> torch.Tensor:
        """MSE between the feature network's features of the one-step estimate x0_hat and of the clean target."""
        sigma = outputs.sigmas[:, None, None, None]
        x0 = outputs.noise - outputs.target
        x0_hat = x0 + sigma * (outputs.target - outputs.velocity)
        model = self.accelerator.unwrap_model(model)
        if model.vae is not None:
            scale = model.config.vae_scaling_factor
            x0_hat = model.vae.decode(x0_hat / scale).sample
            with torch.no_grad():
                x0 = model.vae.decode(x0 / scale).sample
        with torch.no_grad():
            target_features = self.feature_network(x0.float())
        return torch.nn.functional.mse_loss(self.feature_network(x0_hat.float()).float(), target_features.float())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_terms:
            for name, values in self._loss_terms.items():
                logs[name] = torch.stack(values).mean().item()
            self._loss_terms = {}
        super().log(logs, start_time)

    def _callbacks_of(self, kind):
        return [callback for callback in self.callback_handler.callbacks if isinstance(callback, kind)]

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        if resume_from_checkpoint is True or (
            isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() in ("true", "latest")
        ):
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"`resume_from_checkpoint`: no checkpoint found in {self.args.output_dir!r}.")
        for ema in self._callbacks_of(EMACallback):
            ema.resume_from = resume_from_checkpoint or None
        return super().train(resume_from_checkpoint=resume_from_checkpoint or None, **kwargs)

    @contextlib.contextmanager
    def _seeded_rng(self):
        device = self.args.device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.args.seed)
            yield

    def reconstruction_metrics(self, metric_key_prefix: str = "eval") -> dict[str, float]:
        if self.psnr_images is None:
            return {}
        settings = (self.psnr_num_inference_steps, self.psnr_guidance_scale, self.psnr_seed)
        model = self.accelerator.unwrap_model(self.model)
        images = self.psnr_images.to(model.device)
        metrics = {f"{metric_key_prefix}_psnr": reconstruction_psnr(model, images, *settings)}
        if self.diagnostic and images.shape[0] >= 2:
            report = token_reliance(model, pixel_values=images, seed=self.psnr_seed)
            metrics.update(flatten_token_reliance(report, metric_key_prefix))
        for ema in self._callbacks_of(EMACallback):
            if ema.shadow and not ema.swapped:
                with ema.average_parameters(self.model):
                    metrics[f"{metric_key_prefix}_psnr_ema"] = reconstruction_psnr(model, images, *settings)
        return metrics

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, **kwargs):
        metric_key_prefix = kwargs.get("metric_key_prefix", "eval")
        with self._seeded_rng():
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, **kwargs)
            with self.accelerator.autocast():
                output.metrics.update(self.reconstruction_metrics(metric_key_prefix))
        return output


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks of `train_tokenizer`
# ----------------------------------------------------------------------------------------------------------------------
def _parse_ints(name: str, text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise ValueError(f"`{name}` must be comma-separated integers such as '8,5,5,5', got {text!r}.")
    return values


def build_model(model_args: TokenizerModelArguments, repa_feature_dim: int | None = None) -> FlexTokModel:
    """A fresh model from a preset / JSON config with overrides, or a loaded one (`model_name_or_path`) to fine-tune.

    `repa_feature_dim` (the REPA teacher's feature size) switches REPA on: the model gets a projector for decoder
    block `model_args.repa_layer` (default 1, or the last block of shallower decoders). With `vae_name_or_path`, the
    latents are scaled by `model_args.vae_scaling_factor`, else by the VAE config's `scaling_factor`.
    """
    overrides = {
        name: getattr(model_args, name)
        for name in ARCHITECTURE_OVERRIDES + OBJECTIVE_OVERRIDES + REPA_OVERRIDES
        if getattr(model_args, name, None) is not None
    }
    if "fsq_levels" in overrides:
        overrides["fsq_levels"] = _parse_ints("fsq_levels", overrides["fsq_levels"])
    repa = {name: overrides.pop(name) for name in REPA_OVERRIDES if name in overrides}
    if repa_feature_dim is not None:
        repa["repa_feature_dim"] = int(repa_feature_dim)
    elif repa:
        raise ValueError(f"{sorted(repa)} need a REPA teacher (`repa_teacher`), which was not given.")
    if getattr(model_args, "vae_scaling_factor", None) is not None:
        overrides["vae_scaling_factor"] = float(model_args.vae_scaling_factor)
    vae = None
    if model_args.vae_name_or_path is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(model_args.vae_name_or_path)
        overrides["vae_config"] = {k: v for k, v in vae.config.items() if not k.startswith("_")}
        if "vae_scaling_factor" not in overrides and vae.config.get("scaling_factor") is not None:
            overrides["vae_scaling_factor"] = float(vae.config.scaling_factor)
    if model_args.model_name_or_path is not None:
        fixed = sorted(set(overrides) - set(OBJECTIVE_OVERRIDES))
        if fixed:
            raise ValueError(
                f"Cannot change {fixed} of a pretrained model ({model_args.model_name_or_path!r}); only "
                f"{list(OBJECTIVE_OVERRIDES)} may be overridden when fine-tuning."
            )
        if repa:  # passed to from_pretrained so that a missing projector is created (and initialized)
            pretrained = FlexTokConfig.from_pretrained(model_args.model_name_or_path)
            repa.setdefault("repa_layer", default_repa_layer(pretrained))
        model = FlexTokModel.from_pretrained(model_args.model_name_or_path, **repa)
        for name, value in overrides.items():
            setattr(model.config, name, value)
        model.config.validate_flextok()
        return model
    if model_args.config in TOKENIZER_PRESETS:
        config = TOKENIZER_PRESETS[model_args.config]()
    elif os.path.isfile(model_args.config) or os.path.isdir(model_args.config):
        config = FlexTokConfig.from_pretrained(model_args.config)
    else:
        raise ValueError(
            f"`config` must be one of {sorted(TOKENIZER_PRESETS)} or a config JSON / folder, got {model_args.config!r}."
        )
    for name, value in overrides.items():
        setattr(config, name, value)
    if repa:
        repa.setdefault("repa_layer", default_repa_layer(config))
        for name, value in repa.items():
            setattr(config, name, value)
    config.validate_flextok()
    model = FlexTokModel(config)
    if vae is not None:
        model.vae.load_state_dict(vae.state_dict())
    return model


def load_feature_network(path: str | None = None):
    """The classifier-feature network of the feature-matching term (default: the shipped evaluation classifier)."""
    from ..metrics.classifier import ClassifierFeatureNetwork, FlexTokImageClassifier, load_default_classifier

    classifier = load_default_classifier() if path is None else FlexTokImageClassifier.from_pretrained(path)
    return ClassifierFeatureNetwork(classifier.eval().requires_grad_(False))


def _load_split(names: list[str], split: str, image_column: str):
    parts = [load_image_dataset(name, split) for name in names]
    if len(parts) == 1:
        return parts[0]
    return concatenate_datasets([part.select_columns([image_column]) for part in parts])


def load_datasets(data_args: TokenizerDataArguments, seed: int = 0):
    """(train, eval or None) from `data_args.dataset`; several comma-separated names are concatenated (image column
    only) and shuffled with `seed` before `max_train_samples` is applied."""
    names = [name.strip() for name in data_args.dataset.split(",") if name.strip()]
    if not names:
        raise ValueError(f"`dataset` must name at least one dataset, got {data_args.dataset!r}.")
    train = _load_split(names, data_args.train_split, data_args.image_column)
    if len(names) > 1:
        train = train.shuffle(seed=seed)
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    eval_dataset = None
    if data_args.eval_split is None:
        try:
            eval_dataset = _load_split(names, "test", data_args.image_column)
        except ValueError as error:
            logger.warning("No 'test' split (%s); training without evaluation.", error)
    elif data_args.eval_split.lower() != "none":
        eval_dataset = _load_split(names, data_args.eval_split, data_args.image_column)
    if eval_dataset is not None and data_args.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(data_args.max_eval_samples, len(eval_dataset))))
    return train, eval_dataset


def parse_tokenizer_args(args=None):
    """`(TokenizerModelArguments, TokenizerDataArguments, TokenizerTrainingArguments)` from a list of CLI strings
    (default `sys.argv[1:]`), a dict, a JSON file path (a single `.json` argument) or an existing tuple."""
    if isinstance(args, tuple) and len(args) == 3:
        return args
    parser = HfArgumentParser(
        (TokenizerModelArguments, TokenizerDataArguments, TokenizerTrainingArguments),
        prog="flextok-hf train-tokenizer",
        description="Train a FlexTok tokenizer (stage 1) with transformers.Trainer.",
        epilog=LAUNCH_DOCS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for action in parser._actions:  # optional bools (`--bf16`, `--disable_tqdm`, ...) alone mean True, like bools
        if action.type is string_to_bool and action.nargs is None:
            action.nargs, action.const = "?", True
    if isinstance(args, dict):
        return parser.parse_dict(args)
    argv = list(sys.argv[1:] if args is None else args)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(argv)


# ----------------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------------
def train_tokenizer(args: Sequence[str] | dict | tuple | None = None) -> FlexTokTrainer:
    """Builds the model, data, callbacks and [`FlexTokTrainer`], trains (resuming if `--resume_from_checkpoint` is a
    checkpoint folder or `latest`), evaluates the final weights, saves the final model and returns the trainer.

    `args` is what [`parse_tokenizer_args`] accepts (CLI strings, a dict, or the three parsed dataclasses).
    """
    model_args, data_args, training_args = parse_tokenizer_args(args)
    if data_args.cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"`cache_dtype` must be one of {CACHE_DTYPES}, got {data_args.cache_dtype!r}.")
    set_seed(training_args.seed)
    repa_teacher = None
    if model_args.repa_teacher is not None:
        if data_args.cache_latents:
            raise ValueError("`cache_latents` cannot be combined with `repa_teacher` (the teacher needs the images).")
        repa_teacher = REPATeacher(
            model_args.repa_teacher,
            image_size=model_args.repa_teacher_image_size,
            layer=model_args.repa_teacher_layer,
        )
    model = build_model(model_args, repa_feature_dim=repa_teacher.feature_dim if repa_teacher is not None else None)
    feature_network = None
    if training_args.feature_matching_weight > 0:
        feature_network = load_feature_network(training_args.feature_matching_network)
    processor = FlexTokImageProcessor.from_model_config(model.config)
    with training_args.main_process_first(desc="loading the datasets"):
        train_dataset, eval_dataset = load_datasets(data_args, seed=training_args.seed)
    if eval_dataset is None and training_args.eval_strategy != IntervalStrategy.NO:
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.do_eval = False

    image_collator = ImageCollator(processor, image_column=data_args.image_column, random_flip=data_args.random_flip)
    preview = eval_dataset if eval_dataset is not None else train_dataset
    num_fixed = min(len(preview), max(training_args.num_sample_images, training_args.eval_psnr_images))
    fixed_rows = [preview[i] for i in range(num_fixed)]

    def fixed_images(count: int):
        return ImageCollator(processor, image_column=data_args.image_column)(fixed_rows[:count])["pixel_values"]

    collator = image_collator
    if data_args.cache_latents:
        with training_args.main_process_first(desc="caching latents"):
            cache = dict(image_column=data_args.image_column, dtype=data_args.cache_dtype, seed=training_args.seed)
            train_dataset = cache_latents(model, train_dataset, **cache)
            if eval_dataset is not None:
                eval_dataset = cache_latents(model, eval_dataset, **cache)
        collator = LatentCollator(random_flip=data_args.random_flip)

    sharded = bool(training_args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    if sharded:
        logger.warning("FSDP: the EMA, sample grids and eval PSNR are disabled (they need unsharded weights).")
    log_history = LogHistoryCallback(write_at_train_end=False)  # written once, after the final evaluation
    callbacks = [log_history]
    ema = None
    if training_args.ema_decay > 0 and not sharded:
        ema = EMACallback(training_args.ema_decay, use_warmup=training_args.ema_use_warmup, image_processor=processor)
        callbacks.append(ema)
    if training_args.num_sample_images > 0 and not sharded:
        budgets = training_args.sample_budgets
        callbacks.append(
            SampleGridCallback(
                fixed_images(training_args.num_sample_images),
                budgets=None if budgets is None else _parse_ints("sample_budgets", budgets),
                every_n_steps=training_args.sample_every_n_steps,
                num_inference_steps=training_args.sample_num_inference_steps,
                guidance_scale=training_args.sample_guidance_scale,
                seed=training_args.seed,
                ema=ema,
            )
        )
    use_psnr = eval_dataset is not None and training_args.eval_psnr_images > 0 and not sharded
    trainer = FlexTokTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=callbacks,
        psnr_images=fixed_images(training_args.eval_psnr_images) if use_psnr else None,
        psnr_num_inference_steps=training_args.eval_psnr_num_inference_steps,
        psnr_guidance_scale=training_args.eval_psnr_guidance_scale,
        psnr_seed=training_args.seed,
        repa_teacher=repa_teacher,
        recipe=training_args.recipe(),
        feature_network=feature_network,
        feature_matching_weight=training_args.feature_matching_weight,
        diagnostic=training_args.eval_diagnostic,
    )
    if trainer.is_world_process_zero():
        print(
            f"FlexTok tokenizer training: {count_parameters(model) - count_parameters(model.vae):,} parameters "
            f"(without the VAE), {len(train_dataset):,} train / {len(eval_dataset) if eval_dataset is not None else 0:,} eval "
            f"images, world_size={training_args.world_size}, bf16={training_args.bf16}, "
            f"device={training_args.device}, output_dir={training_args.output_dir}",
            flush=True,
        )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if eval_dataset is not None:
        trainer.evaluate(metric_key_prefix="eval_ema" if ema is not None and ema.swapped else "eval")
    if ema is None:
        trainer.save_model()
    log_history.write(trainer.args, trainer.state)
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train_tokenizer(argv)
    return 0


__all__ = [
    "LAUNCH_DOCS",
    "TOKENIZER_PRESETS",
    "FlexTokTrainer",
    "TokenizerDataArguments",
    "TokenizerModelArguments",
    "TokenizerTrainingArguments",
    "build_model",
    "load_feature_network",
    "load_datasets",
    "main",
    "native_bf16_available",
    "parse_tokenizer_args",
    "train_tokenizer",
]
