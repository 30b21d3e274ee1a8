"""`TrainerCallback`s for tokenizer training: EMA weights, sample grids, and the log/loss-curve dump.

- [`EMACallback`]: float32 exponential moving average of the trainable weights (diffusers' `EMAModel`); `ema.safetensors` in every checkpoint,
  restored on resume; at the end the EMA model is written to `output_dir` and swapped into the model.
- [`SampleGridCallback`]: PNG grids (rows = fixed images, columns = original + one reconstruction per token budget)
  under `output_dir/samples/step-XXXXXX.png`.
- [`LogHistoryCallback`]: `output_dir/log_history.json` and `output_dir/loss_curve.png` at the end of training.
- `reconstruction_grid` / `reconstruction_psnr`: the decoding behind the grids and the eval PSNR.

All three work with a plain `transformers.Trainer`, under DDP, and resume exactly. FSDP shards the parameters, which
the EMA shadow and the sampling code do not handle: disable them there (`train_tokenizer` does so).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import numpy as np
import torch
from diffusers.training_utils import EMAModel
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..decoding import decode_at_budgets, default_budgets
from ..metrics.functional import psnr

logger = logging.getLogger(__name__)

EMA_WEIGHTS_NAME = "ema.safetensors"


def checkpoint_dir(args, state) -> str:
    """The folder Trainer writes the checkpoint of `state.global_step` to (`output_dir/checkpoint-<step>`)."""
    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")


def _unwrap(model):
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


class EMACallback(TrainerCallback):
    """Exponential moving average of the trainable weights (diffusers' `EMAModel`), updated after every optimizer step.

    `shadow = d * shadow + (1 - d) * param`, with diffusers' decay rule: after n updates `d = min(decay, (1 + n) /
    (10 + n))` when `use_warmup` (so the average is not dominated by the random init in short runs), else `d = decay`;
    in both cases the first update copies the weights (`d = 0`). The shadow is a float32 copy on the parameters'
    device.

    Checkpoints: `on_save` writes `ema.safetensors` (the shadow, plus `num_updates` in the metadata) into the checkpoint
    folder Trainer just wrote. On resume, `on_train_begin` loads it from `resume_from` (set by [`FlexTokTrainer`]) or,
    with a plain Trainer, from `output_dir/checkpoint-<global_step>`, so a resumed run ends with the same EMA as an
    uninterrupted one, bit for bit.

    End of training (this is the documented choice): if `save_final`, the EMA model is saved to `output_dir` with
    `save_pretrained` (plus `image_processor`, if given); if `swap_at_end`, the EMA weights are copied into the model,
    so a following `trainer.evaluate()`, `trainer.save_model()` or sample grid uses them. The raw (non-averaged)
    weights stay available in the last checkpoint.

    Args:
        decay: the EMA decay in [0, 1).
        use_warmup: ramp the decay up as `(1 + n) / (10 + n)`.
        save_final: write the EMA model (and `image_processor`) to `args.output_dir` at the end.
        swap_at_end: copy the EMA weights into the model at the end.
        image_processor: saved next to the final EMA model.
    """

    def __init__(
        self,
        decay: float = 0.999,
        use_warmup: bool = True,
        save_final: bool = True,
        swap_at_end: bool = True,
        image_processor=None,
    ):
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0.0 <= decay < 1.0:
            raise ValueError(f"`decay` must be a float in [0, 1), got {decay!r}.")
        self.decay = float(decay)
        self.use_warmup = bool(use_warmup)
        self.save_final = bool(save_final)
        self.swap_at_end = bool(swap_at_end)
        self.image_processor = image_processor
        self.ema: EMAModel | None = None
        self.names: list[str] = []
        self.resume_from: str | None = None
        self.swapped = False

    # -- the average -------------------------------------------------------------------------------------------------
    @staticmethod
    def _trainable(model) -> dict[str, torch.nn.Parameter]:
        return {name: param for name, param in _unwrap(model).named_parameters() if param.requires_grad}

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """Parameter name -> float32 EMA tensor (empty before `reset`)."""
        return {} if self.ema is None else dict(zip(self.names, self.ema.shadow_params))

    @property
    def num_updates(self) -> int:
        return 0 if self.ema is None else self.ema.optimization_step

    def current_decay(self) -> float:
        """The decay the next update will use."""
        return self.ema.get_decay(self.ema.optimization_step + 1) if self.ema is not None else 0.0

    @torch.no_grad()
    def reset(self, model):
        """Starts the average from the model's current weights."""
        trainable = self._trainable(model)
        self.names = list(trainable)
        # min_decay = decay turns off diffusers' (1 + n) / (10 + n) ramp.
        min_decay = 0.0 if self.use_warmup else self.decay
        self.ema = EMAModel(list(trainable.values()), decay=self.decay, min_decay=min_decay)
        self.ema.to(dtype=torch.float32)
        self.swapped = False

    @torch.no_grad()
    def update(self, model):
        params = list(self._trainable(model).values())
        if params and self.ema.shadow_params[0].device != params[0].device:
            self.ema.to(device=params[0].device)
        self.ema.step(params)

    def save(self, path: str):
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in self.shadow.items()}
        metadata = {"num_updates": str(self.num_updates), "decay": repr(self.decay), "format": "pt"}
        save_file(tensors, path, metadata=metadata)

    def load(self, path: str, model):
        """Loads a shadow written by `save` (from `ema.safetensors`), checking it matches the model's parameters."""
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(path)
        trainable = self._trainable(model)
        if set(tensors) != set(trainable):
            missing, unexpected = sorted(set(trainable) - set(tensors)), sorted(set(tensors) - set(trainable))
            raise ValueError(f"{path!r} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")
        if self.ema is None:
            self.reset(model)
        self.ema.shadow_params = [tensors[name].to(trainable[name].device, torch.float32) for name in self.names]
        self.ema.optimization_step = int(metadata.get("num_updates", 0))
        self.swapped = False

    @torch.no_grad()
    def copy_to(self, model):
        """Writes the EMA weights into the model's parameters."""
        self.ema.copy_to(list(self._trainable(model).values()))

    @contextlib.contextmanager
    def average_parameters(self, model):
        """Temporarily runs `model` with the EMA weights (restores the raw ones on exit). No-op once swapped."""
        if self.swapped or self.ema is None:
            yield model
            return
        params = list(self._trainable(model).values())
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield model
        finally:
            with torch.no_grad():
                self.ema.restore(params)

    def ema_state_dict(self, model) -> dict[str, torch.Tensor]:
        """The model's full state dict with the EMA values in place of the trainable weights."""
        model = _unwrap(model)
        state = dict(model.state_dict())
        shadow = self.shadow
        for name, param in self._trainable(model).items():
            state[name] = shadow[name].to(param.dtype)
        return state

    # -- Trainer events ----------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.reset(model)
        path = None
        if self.resume_from is not None:
            path = os.path.join(self.resume_from, EMA_WEIGHTS_NAME)
        elif state.global_step > 0:
            path = os.path.join(checkpoint_dir(args, state), EMA_WEIGHTS_NAME)
        if path is not None:
            if os.path.isfile(path):
                self.load(path, model)
                logger.info("Restored the EMA weights (%d updates) from %s", self.num_updates, path)
            else:
                logger.warning("No %s found for the resumed run; the EMA restarts from the current weights.", path)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.update(model)

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            folder = checkpoint_dir(args, state)
            os.makedirs(folder, exist_ok=True)
            self.save(os.path.join(folder, EMA_WEIGHTS_NAME))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.save_final and state.is_world_process_zero:
            self.save_pretrained(model, args.output_dir)
        if self.swap_at_end:
            self.copy_to(model)
            self.swapped = True

    def save_pretrained(self, model, output_dir: str):
        """Saves the EMA model (safetensors) and the image processor to `output_dir`."""
        model = _unwrap(model)
        model.save_pretrained(output_dir, state_dict=self.ema_state_dict(model))
        if self.image_processor is not None:
            self.image_processor.save_pretrained(output_dir)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """`[B, 3, H, W]` in [-1, 1] -> uint8 `[B, H, W, 3]`."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()


@contextlib.contextmanager
def _eval_mode(model):
    """Puts `model` in eval mode for the block and restores its training flag after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def encode_and_decode(model, images, budgets, num_inference_steps=20, guidance_scale=1.0, seed=0):
    """`(images, decoded)`: `images` `[N, 3, S, S]` as float32 on the model's device, and their reconstructions from
    the first k tokens per k in `budgets`, `[N, J, 3, S, S]` (adaptive guidance, the noise rule of
    `flextok_hf.decoding` under decoder seed `seed`)."""
    images = images.to(model.device, torch.float32)
    token_ids = model.encode(pixel_values=images).token_ids
    decoded = decode_at_budgets(
        model,
        token_ids,
        budgets,
        seed=seed,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        adaptive_guidance=True,
    )
    return images, decoded


@torch.no_grad()
def reconstruction_grid(
    model,
    images: torch.Tensor,
    budgets,
    num_inference_steps: int = 20,
    guidance_scale: float = 1.0,
    seed: int = 0,
) -> Image.Image:
    """Decodes `images` `[N, 3, S, S]` from their first k tokens for each k in `budgets`.

    Returns a PIL grid of `N` rows and `1 + len(budgets)` columns (original, then one column per budget), each cell
    S x S pixels. Decoded by `flextok_hf.decoding.decode_at_budgets`: row i starts from the noise of image i under
    decoder seed `seed` at every budget (the noise rule shared with `coarse_to_fine`, the evaluation and the demo).
    """
    model = _unwrap(model)
    with _eval_mode(model):
        images, decoded = encode_and_decode(model, images, budgets, num_inference_steps, guidance_scale, seed)
    columns = [images, *decoded.unbind(1)]
    cells = np.stack([to_uint8(column) for column in columns], axis=1)  # [N, columns, S, S, 3]
    rows, cols, height, width, _ = cells.shape
    grid = cells.transpose(0, 2, 1, 3, 4).reshape(rows * height, cols * width, 3)
    return Image.fromarray(grid)


@torch.no_grad()
def reconstruction_psnr(model, images: torch.Tensor, num_inference_steps=8, guidance_scale=1.0, seed=0) -> float:
    """Mean PSNR (dB, [-1, 1] range) of `images` `[N, 3, S, S]` reconstructed from all K tokens (noise of decoder
    seed `seed`, by the rule of `flextok_hf.decoding`)."""
    model = _unwrap(model)
    with _eval_mode(model):
        budgets = [model.config.num_registers]
        images, decoded = encode_and_decode(model, images, budgets, num_inference_steps, guidance_scale, seed)
    reconstruction = decoded[:, 0]
    return psnr(reconstruction.float().clamp(-1, 1), images, data_range=2.0, reduction="mean").item()


class SampleGridCallback(TrainerCallback):
    """Saves reconstruction grids of a few fixed images at several token budgets.

    Runs every `every_n_steps` optimizer steps (an int, or a float in (0, 1) for a fraction of the total steps;
    0 = only at the end) and at the end of training, on the main process only, with the EMA weights when `ema` is
    given. Files: `output_dir/samples/step-XXXXXX.png` (rows = images, columns = original + one per budget).

    Args:
        images: `[N, 3, S, S]` in [-1, 1] (e.g. the first eval images through the image processor).
        budgets: token budgets to decode with (default 1, 2, 4, ..., K).
        every_n_steps: interval in steps (or a fraction of `max_steps`).
        num_inference_steps, guidance_scale: decoder settings (`guidance_scale=1` disables guidance).
        seed: seeds the decoder noise, the same at every call.
        ema: an [`EMACallback`] whose weights are used for sampling.
    """

    def __init__(
        self,
        images: torch.Tensor,
        budgets=None,
        every_n_steps: int | float = 0,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.0,
        seed: int = 0,
        ema: EMACallback | None = None,
    ):
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"`images` must be a [N, 3, S, S] tensor, got {getattr(images, 'shape', images)!r}.")
        if not isinstance(every_n_steps, (int, float)) or every_n_steps < 0:
            raise ValueError(f"`every_n_steps` must be >= 0 (int, or a float fraction < 1), got {every_n_steps!r}.")
        self.images = images
        self.budgets = None if budgets is None else tuple(int(k) for k in budgets)
        self.every_n_steps = every_n_steps
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.ema = ema
        self.saved: list[str] = []
        self._interval = 0
        self._last_step = -1

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        num_registers = _unwrap(model).config.num_registers
        if self.budgets is None:
            self.budgets = tuple(default_budgets(num_registers))
        if any(not 1 <= k <= num_registers for k in self.budgets):
            raise ValueError(f"`budgets` must lie in [1, {num_registers}], got {self.budgets}.")
        interval = self.every_n_steps
        if isinstance(interval, float) and 0 < interval < 1:
            interval = max(1, int(np.ceil(state.max_steps * interval)))
        self._interval = int(interval)

    def save_grid(self, args, state, model) -> str | None:
        if not state.is_world_process_zero or state.global_step == self._last_step:
            return None
        context = self.ema.average_parameters(model) if self.ema is not None else contextlib.nullcontext()
        with context:
            grid = reconstruction_grid(
                model, self.images, self.budgets, self.num_inference_steps, self.guidance_scale, self.seed
            )
        folder = os.path.join(args.output_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step-{state.global_step:06d}.png")
        grid.save(path)
        self.saved.append(path)
        self._last_step = state.global_step
        return path

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._interval > 0 and state.global_step % self._interval == 0:
            self.save_grid(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.save_grid(args, state, model)


def plot_loss_curve(log_history: list[dict], path: str):
    """Train loss (and eval loss / PSNR when logged) against the step, saved as a PNG with matplotlib; a second panel
    shows the token-reliance gap when it was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    evals = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    psnr = [(entry["step"], entry["eval_psnr"]) for entry in log_history if "eval_psnr" in entry]
    final_loss = [(entry["step"], entry["eval_ema_loss"]) for entry in log_history if "eval_ema_loss" in entry]
    final_psnr = [(entry["step"], entry["eval_ema_psnr"]) for entry in log_history if "eval_ema_psnr" in entry]
    gap = [(entry["step"], entry["eval_reliance_gap"]) for entry in log_history if "eval_reliance_gap" in entry]
    if gap:
        figure, (axis, gap_axis) = plt.subplots(1, 2, figsize=(12, 4), dpi=100, gridspec_kw={"width_ratios": [7, 4]})
        gap_axis.plot(*zip(*gap), "o-", color="tab:orange")
        gap_axis.axhline(0.0, color="gray", linewidth=0.8)
        gap_axis.set_xlabel("step")
        gap_axis.set_ylabel("(shuffled - true) / shuffled RF loss")
        gap_axis.set_title("token reliance (0 = tokens ignored)")
        gap_axis.grid(alpha=0.3)
    else:
        figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        axis.plot(*zip(*train), label="train loss")
    if evals:
        axis.plot(*zip(*evals), "o-", label="eval loss")
    if final_loss:
        axis.plot(*zip(*final_loss), "*", color="tab:red", markersize=12, label="final eval loss (EMA)")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    handles, labels = axis.get_legend_handles_labels()
    if psnr or final_psnr:
        twin = axis.twinx()
        if psnr:
            twin.plot(*zip(*psnr), "s--", color="tab:green", label="eval PSNR (dB)")
        if final_psnr:
            twin.plot(*zip(*final_psnr), "P", color="tab:purple", markersize=10, label="final eval PSNR (EMA)")
        twin.set_ylabel("PSNR (dB)")
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        axis.legend(handles, labels, loc="upper right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


class LogHistoryCallback(TrainerCallback):
    """Writes `log_history.json` and `loss_curve.png` (train/eval loss, eval PSNR) to `output_dir` at the end of
    training (unless `write_at_train_end=False`); `write(args, state)` writes them at any time, e.g. after a final
    `evaluate()`."""

    def __init__(self, plot: bool = True, write_at_train_end: bool = True):
        self.plot = plot
        self.write_at_train_end = write_at_train_end

    def write(self, args, state):
        if not state.is_world_process_zero:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "log_history.json"), "w") as handle:
            json.dump(state.log_history, handle, indent=2)
        if self.plot:
            plot_loss_curve(state.log_history, os.path.join(args.output_dir, "loss_curve.png"))

    def on_train_end(self, args, state, control, **kwargs):
        if self.write_at_train_end:
            self.write(args, state)


__all__ = [
    "EMA_WEIGHTS_NAME",
    "EMACallback",
    "LogHistoryCallback",
    "SampleGridCallback",
    "checkpoint_dir",
    "default_budgets",
    "plot_loss_curve",
    "reconstruction_grid",
    "reconstruction_psnr",
]
