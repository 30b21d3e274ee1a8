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

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import concatenate_datasets
from transformers import set_seed
from transformers.trainer_utils import IntervalStrategy

from ..configuration_flextok import FlexTokConfig
from ..data import load_image_dataset
from ..image_processing_flextok import FlexTokImageProcessor
from ..modeling_flextok import FlexTokModel, count_parameters
from .arguments import native_bf16_available, parse_training_args, run_entry_point
from .callbacks import EMACallback, LogHistoryCallback, SampleGridCallback
from .collator import CACHE_DTYPES, ImageCollator, LatentCollator, cache_latents
from .repa import REPATeacher, default_repa_layer
from .tokenizer_arguments import (
    ARCHITECTURE_OVERRIDES,
    OBJECTIVE_OVERRIDES,
    REPA_OVERRIDES,
    TOKENIZER_PRESETS,
    TokenizerDataArguments,
    TokenizerModelArguments,
    TokenizerTrainingArguments,
)
from .trainer import FlexTokTrainer

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


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks of `train_tokenizer`
# ----------------------------------------------------------------------------------------------------------------------
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
    from ..modeling_flextok_classifier import ClassifierFeatureNetwork, FlexTokImageClassifier, load_default_classifier

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


@dataclass
class ImageTrainingSetup:
    """Processor, datasets, collator, fixed preview rows and callbacks shared by `train_tokenizer` and
    `finetune_lora` (built by [`prepare_image_training`])."""

    processor: FlexTokImageProcessor
    train_dataset: Any
    eval_dataset: Any
    collator: Any
    fixed_rows: list
    image_column: str
    log_history: LogHistoryCallback | None = None
    ema: EMACallback | None = None
    callbacks: list = field(default_factory=list)

    def fixed_images(self, count: int):
        """The first `count` preview images as `[count, 3, S, S]` pixel values (no augmentation)."""
        return ImageCollator(self.processor, image_column=self.image_column)(self.fixed_rows[:count])["pixel_values"]

    def add_callbacks(self, training_args, enabled: bool = True, **ema_kwargs) -> None:
        """The log history, plus the EMA and the sample grids when `enabled` (and asked for by `training_args`)."""
        self.log_history = LogHistoryCallback(write_at_train_end=False)  # written once, after the final evaluation
        self.callbacks = [self.log_history]
        if training_args.ema_decay > 0 and enabled:
            self.ema = EMACallback(training_args.ema_decay, use_warmup=training_args.ema_use_warmup, **ema_kwargs)
            self.callbacks.append(self.ema)
        if training_args.num_sample_images > 0 and enabled:
            self.callbacks.append(
                SampleGridCallback(
                    self.fixed_images(training_args.num_sample_images),
                    budgets=training_args.sample_budgets,
                    every_n_steps=training_args.sample_every_n_steps,
                    num_inference_steps=training_args.sample_num_inference_steps,
                    guidance_scale=training_args.sample_guidance_scale,
                    seed=training_args.seed,
                    ema=self.ema,
                )
            )

    def trainer_kwargs(self, training_args, psnr: bool = True) -> dict:
        """The data, callback and eval-PSNR arguments of [`FlexTokTrainer`]."""
        use_psnr = psnr and self.eval_dataset is not None and training_args.eval_psnr_images > 0
        return dict(
            train_dataset=self.train_dataset,
            eval_dataset=self.eval_dataset,
            data_collator=self.collator,
            callbacks=self.callbacks,
            psnr_images=self.fixed_images(training_args.eval_psnr_images) if use_psnr else None,
            psnr_num_inference_steps=training_args.eval_psnr_num_inference_steps,
            psnr_guidance_scale=training_args.eval_psnr_guidance_scale,
            psnr_seed=training_args.seed,
        )

    def train_and_evaluate(self, trainer) -> None:
        """Trains (resuming as `--resume_from_checkpoint` asks), then evaluates the final (EMA) weights."""
        trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
        if self.eval_dataset is not None:
            swapped = self.ema is not None and self.ema.swapped
            trainer.evaluate(metric_key_prefix="eval_ema" if swapped else "eval")


def prepare_image_training(config, data_args, training_args) -> ImageTrainingSetup:
    """Loads the datasets, turns evaluation off without an eval split and picks the fixed preview rows."""
    processor = FlexTokImageProcessor.from_model_config(config)
    with training_args.main_process_first(desc="loading the datasets"):
        train_dataset, eval_dataset = load_datasets(data_args, seed=training_args.seed)
    if eval_dataset is None and training_args.eval_strategy != IntervalStrategy.NO:
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.do_eval = False
    collator = ImageCollator(processor, image_column=data_args.image_column, random_flip=data_args.random_flip)
    preview = eval_dataset if eval_dataset is not None else train_dataset
    num_fixed = min(len(preview), max(training_args.num_sample_images, training_args.eval_psnr_images))
    rows = [preview[i] for i in range(num_fixed)]
    return ImageTrainingSetup(processor, train_dataset, eval_dataset, collator, rows, data_args.image_column)


def parse_tokenizer_args(args=None):
    """`(TokenizerModelArguments, TokenizerDataArguments, TokenizerTrainingArguments)` from a list of CLI strings
    (default `sys.argv[1:]`), a dict, a JSON file path (a single `.json` argument) or an existing tuple."""
    return parse_training_args(
        (TokenizerModelArguments, TokenizerDataArguments, TokenizerTrainingArguments),
        args,
        prog="flextok-hf train-tokenizer",
        description="Train a FlexTok tokenizer (stage 1) with transformers.Trainer.",
        epilog=LAUNCH_DOCS,
    )


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
    setup = prepare_image_training(model.config, data_args, training_args)
    if data_args.cache_latents:
        with training_args.main_process_first(desc="caching latents"):
            cache = dict(image_column=data_args.image_column, dtype=data_args.cache_dtype, seed=training_args.seed)
            setup.train_dataset = cache_latents(model, setup.train_dataset, **cache)
            if setup.eval_dataset is not None:
                setup.eval_dataset = cache_latents(model, setup.eval_dataset, **cache)
        setup.collator = LatentCollator(random_flip=data_args.random_flip)

    sharded = bool(training_args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    if sharded:
        logger.warning("FSDP: the EMA, sample grids and eval PSNR are disabled (they need unsharded weights).")
    setup.add_callbacks(training_args, enabled=not sharded, image_processor=setup.processor)
    trainer = FlexTokTrainer(
        model=model,
        args=training_args,
        processing_class=setup.processor,
        repa_teacher=repa_teacher,
        recipe=training_args.recipe(),
        feature_network=feature_network,
        feature_matching_weight=training_args.feature_matching_weight,
        diagnostic=training_args.eval_diagnostic,
        **setup.trainer_kwargs(training_args, psnr=not sharded),
    )
    if trainer.is_world_process_zero():
        print(
            f"FlexTok tokenizer training: {count_parameters(model) - count_parameters(model.vae):,} parameters "
            f"(without the VAE), {len(setup.train_dataset):,} train / {len(setup.eval_dataset or ()):,} eval "
            f"images, world_size={training_args.world_size}, bf16={training_args.bf16}, "
            f"device={training_args.device}, output_dir={training_args.output_dir}",
            flush=True,
        )
    setup.train_and_evaluate(trainer)
    if setup.ema is None:
        trainer.save_model()
    setup.log_history.write(trainer.args, trainer.state)
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point(train_tokenizer, argv)


__all__ = [
    "LAUNCH_DOCS",
    "TOKENIZER_PRESETS",
    "FlexTokTrainer",
    "ImageTrainingSetup",
    "TokenizerDataArguments",
    "TokenizerModelArguments",
    "TokenizerTrainingArguments",
    "build_model",
    "load_feature_network",
    "load_datasets",
    "main",
    "native_bf16_available",
    "parse_tokenizer_args",
    "prepare_image_training",
    "train_tokenizer",
]
