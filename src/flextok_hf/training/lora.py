"""LoRA fine-tuning of a trained FlexTok tokenizer with peft and `transformers.Trainer`.

Adapters go on the attention (`q_proj`, `k_proj`, `v_proj`, `o_proj`) and SwiGLU (`gate_proj`, `up_proj`, `down_proj`)
projections of the decoder blocks, and of the encoder blocks with `lora_encoder` (which changes the token ids); the
patch embeddings, adaLN modulations, readouts (`to_codes`, `from_codes`, the head) and the VAE stay frozen.

```python
from flextok_hf.training.lora import finetune_lora, load_lora

finetune_lora(["--model_name_or_path", "runs/mnist", "--dataset", "animal_mnist", "--output_dir", "runs/lora"])
model = load_lora("runs/lora")                 # PeftModel on the base named in flextok_lora.json
merged = load_lora("runs/lora", merge=True)    # a plain FlexTokModel with the adapter merged in
# or with the libraries directly:
model = PeftModel.from_pretrained(FlexTokModel.from_pretrained("runs/mnist"), "runs/lora")
base = FlexTokModel.from_pretrained("runs/mnist"); base.load_adapter("runs/lora")
```

The output folder holds only the adapter (`adapter_config.json`, `adapter_model.safetensors`, peft's `README.md`) and
`flextok_lora.json` (the base model path and the LoRA settings), plus `log_history.json` / `loss_curve.png`,
`samples/` and the checkpoints of the run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import set_seed

from ..modeling_flextok import FlexTokModel
from .arguments import parse_training_args, run_entry_point
from .callbacks import encode_and_decode
from .tokenizer import (
    FlexTokTrainer,
    TokenizerDataArguments,
    TokenizerTrainingArguments,
    prepare_image_training,
)

logger = logging.getLogger(__name__)

LORA_METADATA_NAME = "flextok_lora.json"
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def lora_target_modules(decoder: bool = True, encoder: bool = False, attention: bool = True, mlp: bool = True) -> str:
    """A regex over full module paths (peft matches it with `re.fullmatch`) selecting the attention and/or MLP
    projections of the decoder and/or encoder blocks, e.g. `decoder.layers.3.attn.q_proj`."""
    stacks = [name for name, chosen in (("decoder", decoder), ("encoder", encoder)) if chosen]
    parts = [f"attn\\.({'|'.join(ATTENTION_PROJECTIONS)})"] if attention else []
    parts += [f"mlp\\.({'|'.join(MLP_PROJECTIONS)})"] if mlp else []
    if not stacks or not parts:
        raise ValueError(
            f"LoRA needs at least one of decoder/encoder and one of attention/mlp, got decoder={decoder}, "
            f"encoder={encoder}, attention={attention}, mlp={mlp}."
        )
    return f"(.*\\.)?({'|'.join(stacks)})\\.layers\\.\\d+\\.({'|'.join(parts)})"


def flextok_lora_config(
    r: int = 16,
    lora_alpha: float = 32,
    lora_dropout: float = 0.0,
    encoder: bool = False,
    attention: bool = True,
    mlp: bool = True,
):
    """A peft `LoraConfig` for FlexTok (see [`lora_target_modules`])."""
    from peft import LoraConfig

    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"`r` (the LoRA rank) must be a positive int, got {r!r}.")
    if not 0.0 <= lora_dropout < 1.0:
        raise ValueError(f"`lora_dropout` must be in [0, 1), got {lora_dropout!r}.")
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=lora_target_modules(decoder=True, encoder=encoder, attention=attention, mlp=mlp),
        bias="none",
    )


def add_lora(model: FlexTokModel, lora_config=None, **kwargs):
    """Wraps `model` in a peft `PeftModel` with fresh adapters (`lora_config`, or `flextok_lora_config(**kwargs)`);
    only the adapter weights are trainable."""
    from peft import get_peft_model

    if not isinstance(model, FlexTokModel):
        raise TypeError(f"`model` must be a FlexTokModel, got {type(model).__name__}.")
    return get_peft_model(model, lora_config if lora_config is not None else flextok_lora_config(**kwargs))


def save_lora(peft_model, output_dir: str | os.PathLike, base_model_name_or_path: str, **metadata) -> str:
    """Saves the adapter only (safetensors) and `flextok_lora.json` with the base model path and `metadata`."""
    output_dir = os.fspath(output_dir)
    peft_model.save_pretrained(output_dir, safe_serialization=True)
    info = {"base_model_name_or_path": os.path.abspath(base_model_name_or_path), **metadata}
    path = os.path.join(output_dir, LORA_METADATA_NAME)
    with open(path, "w") as handle:
        json.dump(info, handle, indent=2)
    return path


def load_lora(adapter_dir: str | os.PathLike, base_model=None, merge: bool = False, is_trainable: bool = False):
    """A `PeftModel` (or, with `merge`, a plain merged `FlexTokModel`) from an adapter folder.

    Args:
        adapter_dir: a folder written by [`save_lora`] / `finetune-lora`.
        base_model: a `FlexTokModel` or its path; default: `base_model_name_or_path` of `flextok_lora.json`.
        merge: return `merge_and_unload()` of the adapted model.
        is_trainable: keep the adapter trainable (to continue fine-tuning).
    """
    from peft import PeftModel

    adapter_dir = os.fspath(adapter_dir)
    if base_model is None:
        path = os.path.join(adapter_dir, LORA_METADATA_NAME)
        if not os.path.isfile(path):
            raise ValueError(f"`base_model` is required: {adapter_dir!r} has no {LORA_METADATA_NAME}.")
        with open(path) as handle:
            base_model = json.load(handle)["base_model_name_or_path"]
    if isinstance(base_model, (str, os.PathLike)):
        base_model = FlexTokModel.from_pretrained(base_model)
    if not isinstance(base_model, FlexTokModel):
        raise TypeError(f"`base_model` must be a FlexTokModel or a path, got {type(base_model).__name__}.")
    model = PeftModel.from_pretrained(base_model, adapter_dir, is_trainable=is_trainable)
    return model.merge_and_unload() if merge else model


# ----------------------------------------------------------------------------------------------------------------------
# finetune-lora
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class LoraModelArguments:
    model_name_or_path: str = field(metadata={"help": "The trained FlexTokModel folder to adapt."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA scale numerator (scale = alpha / r)."})
    lora_dropout: float = 0.0
    lora_encoder: bool = field(default=False, metadata={"help": "Also adapt the encoder (changes the token ids)."})
    lora_attention: bool = field(default=True, metadata={"help": "Adapt q/k/v/o projections."})
    lora_mlp: bool = field(default=True, metadata={"help": "Adapt gate/up/down projections."})


@dataclass
class LoraTrainingArguments(TokenizerTrainingArguments):
    """[`TokenizerTrainingArguments`] with LoRA defaults (higher learning rate, no weight decay)."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.0


def parse_lora_args(args=None):
    """`(LoraModelArguments, TokenizerDataArguments, LoraTrainingArguments)` from CLI strings, a dict or a JSON file."""
    return parse_training_args(
        (LoraModelArguments, TokenizerDataArguments, LoraTrainingArguments),
        args,
        prog="flextok-hf finetune-lora",
        description="Adapt a trained FlexTok tokenizer to new data with LoRA (peft) and transformers.Trainer.",
    )


def finetune_lora(args: Sequence[str] | dict | tuple | None = None) -> FlexTokTrainer:
    """Loads the base model, adds LoRA adapters, trains them with [`FlexTokTrainer`] (EMA of the adapter weights,
    sample grids, eval PSNR as in `train-tokenizer`), evaluates and saves the adapter to `output_dir`.

    Returns the trainer; `trainer.model` is the `PeftModel` (with the EMA adapter weights when the EMA is on).
    """
    lora_args, data_args, training_args = parse_lora_args(args)
    set_seed(training_args.seed)
    base = FlexTokModel.from_pretrained(lora_args.model_name_or_path)
    model = add_lora(
        base,
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        encoder=lora_args.lora_encoder,
        attention=lora_args.lora_attention,
        mlp=lora_args.lora_mlp,
    )
    setup = prepare_image_training(base.config, data_args, training_args)
    setup.add_callbacks(training_args, save_final=False)
    trainer = FlexTokTrainer(model=model, args=training_args, **setup.trainer_kwargs(training_args))
    if trainer.is_world_process_zero():
        trainable, total = model.get_nb_trainable_parameters()
        print(
            f"FlexTok LoRA fine-tuning of {lora_args.model_name_or_path}: {trainable:,} trainable of {total:,} "
            f"parameters (r={lora_args.lora_r}, encoder={lora_args.lora_encoder}), {len(setup.train_dataset):,} train "
            f"images, output_dir={training_args.output_dir}",
            flush=True,
        )
    setup.train_and_evaluate(trainer)
    if trainer.is_world_process_zero():
        save_lora(
            trainer.accelerator.unwrap_model(model),
            training_args.output_dir,
            lora_args.model_name_or_path,
            lora=asdict(lora_args),
            dataset=data_args.dataset,
            max_steps=training_args.max_steps,
            ema_decay=training_args.ema_decay,
        )
    setup.log_history.write(trainer.args, trainer.state)
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point(finetune_lora, argv)


@torch.no_grad()
def budget_psnr(model, pixel_values: torch.Tensor, budgets, num_inference_steps=20, guidance_scale=1.0, seed=0):
    """Mean PSNR (dB) of `pixel_values` `[N, 3, S, S]` reconstructed from their first k tokens, per k in `budgets`.
    Image i starts from the same noise for every budget and every model: the noise rule of `flextok_hf.decoding`
    (`decode_at_budgets`) under decoder seed `seed`."""
    from ..metrics.functional import psnr

    model.eval()
    budgets = [int(k) for k in budgets]
    images, decoded = encode_and_decode(model, pixel_values, budgets, num_inference_steps, guidance_scale, seed)
    return {k: psnr(decoded[:, j].clamp(-1, 1), images, reduction="mean").item() for j, k in enumerate(budgets)}


@torch.no_grad()
def budget_rf_loss(model, pixel_values: torch.Tensor, budgets, seed: int = 0) -> dict:
    """Rectified-flow loss (the training objective, eval mode) of `pixel_values` `[N, 3, S, S]` conditioned on their
    first k tokens, per k in `budgets`, and with the null condition (key `"null"`). The noise and the sigmas
    (logit-normal, as in training) are drawn once from `seed`, so models and budgets share them."""
    model.eval()
    images = pixel_values.to(model.device, torch.float32)
    config, batch = model.config, images.shape[0]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((batch, config.latent_channels, config.latent_size, config.latent_size), generator=generator)
    normal = torch.randn(batch, generator=generator)
    sigmas = torch.sigmoid(normal * config.logit_normal_std + config.logit_normal_mean)
    draws = {"noise": noise.to(model.device), "sigmas": sigmas.to(model.device)}
    results = {}
    for k in [*budgets, "null"]:
        keep_k = torch.full((batch,), 1 if k == "null" else int(k), device=model.device)
        null = torch.full((batch,), k == "null", device=model.device)
        output = model(pixel_values=images, keep_k=keep_k, null_condition_mask=null, **draws)
        results[k if k == "null" else int(k)] = output.rf_loss.item()
    return results


__all__ = [
    "LORA_METADATA_NAME",
    "budget_rf_loss",
    "LoraModelArguments",
    "LoraTrainingArguments",
    "add_lora",
    "budget_psnr",
    "finetune_lora",
    "flextok_lora_config",
    "load_lora",
    "lora_target_modules",
    "main",
    "parse_lora_args",
    "save_lora",
]
