"""`FlexTokTrainer`: `Trainer` for the FlexTok tokenizer, with eval PSNR, REPA, the recipe and feature matching."""

from __future__ import annotations

import contextlib

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from ..diagnostics import flatten_token_reliance, token_reliance
from .callbacks import EMACallback, reconstruction_psnr
from .recipe import FlexTokRecipe


class LossTermsLoggingMixin:
    """For a `Trainer`: each training log also gets the mean of every loss term collected in `self._loss_terms`
    (name -> list of scalar tensors) since the previous log."""

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_terms:
            for name, values in self._loss_terms.items():
                logs[name] = torch.stack(values).mean().item()
            self._loss_terms = {}
        super().log(logs, start_time)


class FlexTokTrainer(LossTermsLoggingMixin, Trainer):
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


__all__ = ["FlexTokTrainer"]
