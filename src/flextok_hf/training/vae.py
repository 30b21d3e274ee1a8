"""Stage 0: train a small diffusers `AutoencoderKL` for FlexTok with `transformers.Trainer`.

```python
from flextok_hf.training.vae import train_vae

trainer = train_vae({"dataset": "mnist", "image_size": 32, "output_dir": "runs/vae", "max_steps": 2000})
# then: flextok-hf train-tokenizer --vae_name_or_path runs/vae --config tiny --image_size 32 ...
```

Loss per batch (images x in [-1, 1], posterior q(z|x) = N(mu, sigma^2), z ~ q in training, z = mu in eval):

    loss = MSE(x_hat, x) + l1_weight * |x_hat - x| + kl_weight * KL + perceptual_weight * P

with `KL` the per-element mean of `0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)` (so the weight does not depend on the
latent size), and `P` an optional feature-matching term on a frozen [`FlexTokImageClassifier`] (the mean over its
stages of the MSE between channel-normalized feature maps of x_hat and x).

`output_dir` ends up with the VAE in diffusers format (`config.json` + `diffusion_pytorch_model.safetensors`) whose
`scaling_factor` is `1 / std` of the latents (posterior means) of up to `scaling_num_samples` training images, a
`FlexTokImageProcessor` for `image_size`, `log_history.json` and `loss_curve.png`; checkpoints hold Trainer's usual
`model.safetensors` (the VAE as `vae.*`, from [`AutoencoderKLWithLoss`]) and resume exactly.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.hf_argparser import string_to_bool
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint
from transformers.utils import ModelOutput

from ..image_processing_flextok import FlexTokImageProcessor
from .callbacks import LogHistoryCallback
from .collator import ImageCollator
from .tokenizer import _parse_ints, load_datasets, native_bf16_available

logger = logging.getLogger(__name__)


@dataclass
class VAELossOutput(ModelOutput):
    """Loss terms of one batch (`reconstruction` `[B, 3, H, W]`, `latents` `[B, C, h, w]`)."""

    loss: torch.FloatTensor | None = None
    mse_loss: torch.FloatTensor | None = None
    l1_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    perceptual_loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None


def small_vae_config(
    image_size: int = 32,
    block_out_channels: Sequence[int] = (32, 64, 64),
    latent_channels: int = 4,
    layers_per_block: int = 1,
    norm_num_groups: int = 16,
    mid_block_add_attention: bool = True,
) -> dict:
    """`AutoencoderKL` config of a small VAE; its downsampling factor is `2 ** (len(block_out_channels) - 1)`."""
    block_out_channels = [int(c) for c in block_out_channels]
    if not block_out_channels or any(c % norm_num_groups for c in block_out_channels):
        raise ValueError(
            f"`norm_num_groups` ({norm_num_groups}) must divide every entry of `block_out_channels` "
            f"({block_out_channels})."
        )
    factor = 2 ** (len(block_out_channels) - 1)
    if image_size % factor:
        raise ValueError(f"`image_size` ({image_size}) must be divisible by the VAE factor {factor}.")
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(block_out_channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(block_out_channels),
        "block_out_channels": block_out_channels,
        "layers_per_block": int(layers_per_block),
        "act_fn": "silu",
        "latent_channels": int(latent_channels),
        "norm_num_groups": int(norm_num_groups),
        "sample_size": int(image_size),
        "mid_block_add_attention": bool(mid_block_add_attention),
    }


class ClassifierPerceptualLoss(nn.Module):
    """Feature matching on a frozen [`FlexTokImageClassifier`]: mean over its stages of the MSE between the
    channel-normalized feature maps of two image batches `[B, 3, H, W]` in [-1, 1] (resized to its input size).
    Gradients flow into the first argument."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        hidden_states = self.classifier.resize(images)
        maps = []
        for stage in self.classifier.stages:
            hidden_states = stage(hidden_states)
            maps.append(F.normalize(hidden_states.float(), dim=1, eps=1e-6))
        return maps

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_maps = self.feature_maps(target)
        terms = [F.mse_loss(a, b) for a, b in zip(self.feature_maps(reconstruction), target_maps)]
        return torch.stack(terms).mean()


def vae_loss(
    vae,
    pixel_values: torch.Tensor,
    kl_weight: float = 1e-4,
    l1_weight: float = 0.0,
    perceptual_weight: float = 0.0,
    perceptual_loss: nn.Module | None = None,
    sample_posterior: bool = True,
    generator: torch.Generator | None = None,
) -> VAELossOutput:
    """The training objective of an `AutoencoderKL` on images `[B, 3, H, W]` in [-1, 1] (see the module docstring)."""
    posterior = vae.encode(pixel_values).latent_dist
    latents = posterior.sample(generator) if sample_posterior else posterior.mode()
    reconstruction = vae.decode(latents).sample
    target = pixel_values.to(reconstruction.dtype)
    mse = F.mse_loss(reconstruction.float(), target.float())
    kl = (0.5 * (posterior.mean.float() ** 2 + posterior.var.float() - 1.0 - posterior.logvar.float())).mean()
    loss = mse + kl_weight * kl
    l1 = perceptual = None
    if l1_weight > 0:
        l1 = F.l1_loss(reconstruction.float(), target.float())
        loss = loss + l1_weight * l1
    if perceptual_weight > 0:
        if perceptual_loss is None:
            raise ValueError("`perceptual_weight` > 0 needs a `perceptual_loss` module.")
        perceptual = perceptual_loss(reconstruction, target)
        loss = loss + perceptual_weight * perceptual
    return VAELossOutput(
        loss=loss,
        mse_loss=mse,
        l1_loss=l1,
        kl_loss=kl,
        perceptual_loss=perceptual,
        reconstruction=reconstruction,
        latents=latents,
    )


@torch.no_grad()
def compute_scaling_factor(vae, pixel_batches, num_samples: int | None = None) -> float:
    """`1 / std` of the latents (posterior means, what FlexTok tokenizes by default) over all elements of the images in
    `pixel_batches` (an iterable of `[B, 3, H, W]` in [-1, 1]), stopping after `num_samples` images."""
    was_training = vae.training
    vae.eval()
    total, total_sq, count, seen = 0.0, 0.0, 0, 0
    try:
        for batch in pixel_batches:
            if num_samples is not None:
                batch = batch[: num_samples - seen]
            latents = vae.encode(batch.to(vae.device, vae.dtype)).latent_dist.mode().double()
            total += latents.sum().item()
            total_sq += (latents**2).sum().item()
            count += latents.numel()
            seen += batch.shape[0]
            if num_samples is not None and seen >= num_samples:
                break
    finally:
        vae.train(was_training)
    if count < 2:
        raise ValueError("`pixel_batches` must hold at least one image to compute the latent scaling factor.")
    variance = (total_sq - total * total / count) / (count - 1)
    return float(1.0 / max(variance, 1e-12) ** 0.5)


class AutoencoderKLWithLoss(nn.Module):
    """Training view of an `AutoencoderKL`: `forward(pixel_values)` returns the [`vae_loss`] terms (posterior sample in
    training mode, posterior mean in eval mode), so that Trainer (and DDP) call it like any model. The perceptual
    network is held outside the module tree, so checkpoints contain only the VAE (as `vae.*`)."""

    def __init__(self, vae, kl_weight=1e-4, l1_weight=0.0, perceptual_weight=0.0, perceptual_loss=None):
        super().__init__()
        for name, value in (
            ("kl_weight", kl_weight),
            ("l1_weight", l1_weight),
            ("perceptual_weight", perceptual_weight),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
        if perceptual_weight > 0 and perceptual_loss is None:
            raise ValueError("`perceptual_weight` > 0 needs a `perceptual_loss` module.")
        self.vae = vae
        self.kl_weight, self.l1_weight, self.perceptual_weight = kl_weight, l1_weight, perceptual_weight
        self._perceptual = [perceptual_loss]  # a list: not a submodule, so never saved

    def forward(self, pixel_values: torch.Tensor, return_loss: bool = True) -> VAELossOutput:
        perceptual = self._perceptual[0]
        if perceptual is not None:
            perceptual.to(pixel_values.device)
        return vae_loss(
            self.vae,
            pixel_values,
            kl_weight=self.kl_weight,
            l1_weight=self.l1_weight,
            perceptual_weight=self.perceptual_weight,
            perceptual_loss=perceptual,
            sample_posterior=self.training,
        )


class VAETrainer(Trainer):
    """`Trainer` for an [`AutoencoderKLWithLoss`]: `evaluate()` also reports `eval_mse_loss` and `eval_psnr` (dB, from
    the mean MSE in [-1, 1]), and training logs carry the mean of each loss term since the last log."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loss_terms: dict[str, list[torch.Tensor]] = {}
        self._eval_mse: list[torch.Tensor] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, output = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        terms = self._loss_terms if model.training else {}
        if not model.training:
            self._eval_mse.append(output["mse_loss"].detach().float())
        for name in ("mse_loss", "l1_loss", "kl_loss", "perceptual_loss"):
            if output.get(name) is not None:
                terms.setdefault(name, []).append(output[name].detach().float())
        return (loss, output) if return_outputs else loss

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, **kwargs):
        prefix = kwargs.get("metric_key_prefix", "eval")
        self._eval_mse = []
        output = super().evaluation_loop(dataloader, description, True, ignore_keys, **kwargs)
        if self._eval_mse:
            mse = torch.stack(self._eval_mse).mean().item()
            output.metrics[f"{prefix}_mse_loss"] = mse
            output.metrics[f"{prefix}_psnr"] = 10 * math.log10(4.0 / max(mse, 1e-12))
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_terms:
            for name, values in self._loss_terms.items():
                logs[name] = torch.stack(values).mean().item()
            self._loss_terms = {}
        super().log(logs, start_time)


# ----------------------------------------------------------------------------------------------------------------------
# Arguments and entry point
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class VAEModelArguments:
    """The VAE and its loss. `vae_name_or_path` continues training a saved VAE (its architecture flags are ignored)."""

    vae_name_or_path: str | None = field(default=None, metadata={"help": "A diffusers AutoencoderKL folder."})
    image_size: int = field(default=32, metadata={"help": "Training image side in pixels."})
    block_out_channels: str = field(
        default="32,64,64", metadata={"help": "Comma-separated widths; len - 1 halvings (32,64,64 = f4)."}
    )
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = field(default=16, metadata={"help": "GroupNorm groups; must divide every width."})
    mid_block_add_attention: bool = True
    kl_weight: float = field(default=1e-4, metadata={"help": "Weight of the per-element KL term."})
    l1_weight: float = field(default=0.0, metadata={"help": "Weight of an extra L1 reconstruction term."})
    perceptual_weight: float = field(default=0.0, metadata={"help": "Weight of the classifier feature term."})
    perceptual_network: str = field(
        default="flextok_classifier",
        metadata={"help": "'flextok_classifier' (shipped weights) or a FlexTokImageClassifier folder."},
    )
    scaling_num_samples: int = field(default=1024, metadata={"help": "Training images for the latent std."})


@dataclass
class VAEDataArguments:
    dataset: str = field(default="mnist", metadata={"help": "Bundled name(s), comma-separated, or a folder."})
    train_split: str = "train"
    eval_split: str | None = field(default=None, metadata={"help": "Default 'test' if present; 'none' disables."})
    max_train_samples: int | None = None
    max_eval_samples: int | None = 256
    image_column: str = "image"
    random_flip: bool = False


@dataclass
class VAETrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults for small VAEs; `bf16` / `use_cpu` default to automatic (see
    `TokenizerTrainingArguments`)."""

    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False."})
    label_names: list[str] = field(default_factory=list, metadata={"help": "Must stay []."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (default: when natively supported)."})
    use_cpu: bool | None = field(default=None, metadata={"help": "Train on CPU (default: when no accelerator)."})
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    adam_beta2: float = 0.99
    logging_steps: float = 10
    eval_strategy: IntervalStrategy | str = "steps"
    eval_steps: float | None = 0.25
    save_steps: float = 0.25
    save_total_limit: int | None = 2

    def __post_init__(self):
        if self.use_cpu is None:
            self.use_cpu = not torch.accelerator.is_available()
        if self.bf16 is None:
            self.bf16 = not self.fp16 and native_bf16_available(self.use_cpu)
        if self.remove_unused_columns or self.label_names:
            raise ValueError(
                "VAE training needs `remove_unused_columns=False` and `label_names=[]`, got "
                f"{self.remove_unused_columns!r} and {self.label_names!r}."
            )
        super().__post_init__()


def parse_vae_args(args=None):
    """`(VAEModelArguments, VAEDataArguments, VAETrainingArguments)` from CLI strings, a dict or a JSON file."""
    if isinstance(args, tuple) and len(args) == 3:
        return args
    parser = HfArgumentParser(
        (VAEModelArguments, VAEDataArguments, VAETrainingArguments),
        prog="flextok-hf train-vae",
        description="Train a small diffusers AutoencoderKL (FlexTok stage 0) with transformers.Trainer.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for action in parser._actions:
        if action.type is string_to_bool and action.nargs is None:
            action.nargs, action.const = "?", True
    if isinstance(args, dict):
        return parser.parse_dict(args)
    argv = list(sys.argv[1:] if args is None else args)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(argv)


def build_vae(model_args: VAEModelArguments):
    from diffusers import AutoencoderKL

    if model_args.vae_name_or_path is not None:
        return AutoencoderKL.from_pretrained(model_args.vae_name_or_path)
    config = small_vae_config(
        image_size=model_args.image_size,
        block_out_channels=_parse_ints("block_out_channels", model_args.block_out_channels),
        latent_channels=model_args.latent_channels,
        layers_per_block=model_args.layers_per_block,
        norm_num_groups=model_args.norm_num_groups,
        mid_block_add_attention=model_args.mid_block_add_attention,
    )
    return AutoencoderKL.from_config(config)


def build_perceptual_loss(name_or_path: str) -> ClassifierPerceptualLoss:
    from ..metrics.classifier import FlexTokImageClassifier, load_default_classifier

    if name_or_path == "flextok_classifier":
        return ClassifierPerceptualLoss(load_default_classifier())
    if not os.path.isdir(name_or_path):
        raise ValueError(
            f"`perceptual_network` must be 'flextok_classifier' or a FlexTokImageClassifier folder, got {name_or_path!r}."
        )
    return ClassifierPerceptualLoss(FlexTokImageClassifier.from_pretrained(name_or_path, use_safetensors=True))


def save_vae(vae, output_dir: str, pixel_batches, num_samples: int, image_processor=None) -> float:
    """Stores `scaling_factor = 1 / std(latents)` in the VAE config and saves it (diffusers format, safetensors)."""
    scaling_factor = compute_scaling_factor(vae, pixel_batches, num_samples)
    vae.register_to_config(scaling_factor=scaling_factor)
    vae.save_pretrained(output_dir, safe_serialization=True)
    if image_processor is not None:
        image_processor.save_pretrained(output_dir)
    return scaling_factor


def train_vae(args: Sequence[str] | dict | tuple | None = None) -> VAETrainer:
    """Builds the VAE, data and [`VAETrainer`], trains (resuming with `--resume_from_checkpoint <dir>|latest`), evaluates,
    then saves the VAE with its latent scaling factor to `output_dir` and returns the trainer."""
    model_args, data_args, training_args = parse_vae_args(args)
    for name in ("kl_weight", "l1_weight", "perceptual_weight"):
        if getattr(model_args, name) < 0:
            raise ValueError(f"`{name}` must be >= 0, got {getattr(model_args, name)}.")
    if model_args.scaling_num_samples < 1:
        raise ValueError(f"`scaling_num_samples` must be >= 1, got {model_args.scaling_num_samples}.")
    set_seed(training_args.seed)
    vae = build_vae(model_args)
    image_size = int(vae.config.sample_size) if model_args.vae_name_or_path else model_args.image_size
    processor = FlexTokImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    with training_args.main_process_first(desc="loading the datasets"):
        train_dataset, eval_dataset = load_datasets(data_args, seed=training_args.seed)
    if eval_dataset is None and training_args.eval_strategy != IntervalStrategy.NO:
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.do_eval = False
    perceptual = build_perceptual_loss(model_args.perceptual_network) if model_args.perceptual_weight > 0 else None
    log_history = LogHistoryCallback(write_at_train_end=False)
    wrapped = AutoencoderKLWithLoss(
        vae,
        kl_weight=model_args.kl_weight,
        l1_weight=model_args.l1_weight,
        perceptual_weight=model_args.perceptual_weight,
        perceptual_loss=perceptual,
    )
    trainer = VAETrainer(
        model=wrapped,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=ImageCollator(processor, image_column=data_args.image_column, random_flip=data_args.random_flip),
        callbacks=[log_history],
    )
    if trainer.is_world_process_zero():
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        print(
            f"VAE training: {sum(p.numel() for p in vae.parameters()):,} parameters, f{factor}, "
            f"{vae.config.latent_channels} latent channels, {image_size}px, {len(train_dataset):,} train images, "
            f"output_dir={training_args.output_dir}",
            flush=True,
        )
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "latest"):
        resume = get_last_checkpoint(training_args.output_dir)
        if resume is None:
            raise ValueError(f"`resume_from_checkpoint`: no checkpoint found in {training_args.output_dir!r}.")
    trainer.train(resume_from_checkpoint=resume or None)
    if eval_dataset is not None:
        trainer.evaluate()
    if trainer.is_world_process_zero():
        collate = ImageCollator(processor, image_column=data_args.image_column)
        batch_size = 64
        num = min(model_args.scaling_num_samples, len(train_dataset))
        batches = (
            collate([train_dataset[i] for i in range(start, min(start + batch_size, num))])["pixel_values"]
            for start in range(0, num, batch_size)
        )
        batches = tqdm(
            batches, total=-(-num // batch_size), desc="Latent scaling factor", disable=training_args.disable_tqdm
        )
        scaling = save_vae(vae, training_args.output_dir, batches, num, processor)
        trainer.state.log_history.append({"scaling_factor": scaling, "step": trainer.state.global_step})
        print(f"Saved the VAE to {training_args.output_dir} (scaling_factor={scaling:.5f})", flush=True)
    log_history.write(trainer.args, trainer.state)
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train_vae(argv)
    return 0


__all__ = [
    "AutoencoderKLWithLoss",
    "ClassifierPerceptualLoss",
    "VAEDataArguments",
    "VAELossOutput",
    "VAEModelArguments",
    "VAETrainer",
    "VAETrainingArguments",
    "compute_scaling_factor",
    "main",
    "parse_vae_args",
    "save_vae",
    "small_vae_config",
    "train_vae",
    "vae_loss",
]
