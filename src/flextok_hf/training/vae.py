"""Stage 0: train a small diffusers `AutoencoderKL` for FlexTok with `transformers.Trainer`.

```python
from flextok_hf.training.vae import train_vae

trainer = train_vae({"dataset": "mnist", "image_size": 32, "output_dir": "runs/vae", "max_steps": 2000})
# then: flextok-hf train-tokenizer --vae_name_or_path runs/vae --config tiny --image_size 32 ...
```

The objective is in `flextok_hf.training.vae_loss`. `output_dir` ends up with the VAE in diffusers format
(`config.json` + `diffusion_pytorch_model.safetensors`) whose `scaling_factor` is `1 / std` of the latents (posterior
means) of up to `scaling_num_samples` training images, a `FlexTokImageProcessor` for `image_size`, `log_history.json`
and `loss_curve.png`; checkpoints hold Trainer's usual `model.safetensors` (the VAE as `vae.*`, from
[`AutoencoderKLWithLoss`]) and resume exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm
from transformers import set_seed
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint

from ..argument_parser import normalize_int_list_fields
from ..image_processing_flextok import FlexTokImageProcessor
from .arguments import FlexTokTrainingArguments, parse_training_args, run_entry_point
from .callbacks import LogHistoryCallback
from .collator import ImageCollator
from .tokenizer import load_datasets
from .vae_loss import (
    AutoencoderKLWithLoss,
    ClassifierPerceptualLoss,
    VAELossOutput,
    VAETrainer,
    compute_scaling_factor,
    small_vae_config,
    vae_loss,
)

logger = logging.getLogger(__name__)


@dataclass
class VAEModelArguments:
    """The VAE and its loss. `vae_name_or_path` continues training a saved VAE (its architecture flags are ignored)."""

    vae_name_or_path: str | None = field(default=None, metadata={"help": "A diffusers AutoencoderKL folder."})
    image_size: int = field(default=32, metadata={"help": "Training image side in pixels."})
    block_out_channels: list[int] = field(
        default_factory=lambda: [32, 64, 64], metadata={"help": "Widths, e.g. 32,64,64; len - 1 halvings (f4)."}
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

    def __post_init__(self):
        normalize_int_list_fields(self)


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
class VAETrainingArguments(FlexTokTrainingArguments):
    """[`FlexTokTrainingArguments`] with defaults for small VAEs."""

    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    adam_beta2: float = 0.99
    logging_steps: float = 10
    eval_strategy: IntervalStrategy | str = "steps"
    eval_steps: float | None = 0.25
    save_steps: float = 0.25
    save_total_limit: int | None = 2


def parse_vae_args(args=None):
    """`(VAEModelArguments, VAEDataArguments, VAETrainingArguments)` from CLI strings, a dict or a JSON file."""
    return parse_training_args(
        (VAEModelArguments, VAEDataArguments, VAETrainingArguments),
        args,
        prog="flextok-hf train-vae",
        description="Train a small diffusers AutoencoderKL (FlexTok stage 0) with transformers.Trainer.",
    )


def build_vae(model_args: VAEModelArguments):
    from diffusers import AutoencoderKL

    if model_args.vae_name_or_path is not None:
        return AutoencoderKL.from_pretrained(model_args.vae_name_or_path)
    config = small_vae_config(
        image_size=model_args.image_size,
        block_out_channels=model_args.block_out_channels,
        latent_channels=model_args.latent_channels,
        layers_per_block=model_args.layers_per_block,
        norm_num_groups=model_args.norm_num_groups,
        mid_block_add_attention=model_args.mid_block_add_attention,
    )
    return AutoencoderKL.from_config(config)


def build_perceptual_loss(name_or_path: str) -> ClassifierPerceptualLoss:
    from ..modeling_flextok_classifier import FlexTokImageClassifier, load_default_classifier

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
    return run_entry_point(train_vae, argv)


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
