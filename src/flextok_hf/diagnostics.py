"""Does the decoder read its tokens? A diagnostic that answers in seconds.

The rectified-flow loss of held-out images at a few fixed noise levels, three times with the same noise: conditioned on
the images' own registers ("true"), on another image's registers (the batch rolled by one: "shuffled") and on the null
condition ("null"). A decoder that uses its tokens has a clearly lower loss with the true registers than with shuffled
ones; a decoder that collapsed to the unconditional distribution shows no gap.

```python
from flextok_hf.diagnostics import token_reliance

report = token_reliance(model, pixel_values, sigmas=(0.5, 0.8, 1.0))
report["gap"]  # mean relative gap (shuffled - true) / shuffled; ~0 for a decoder that ignores its registers
report["per_sigma"][1.0]  # {"true": ..., "shuffled": ..., "null": ..., "gap": ...}
```
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_DIAGNOSTIC_SIGMAS = (0.5, 0.8, 1.0)


@torch.no_grad()
def token_reliance(
    model,
    pixel_values: torch.Tensor | None = None,
    latents: torch.Tensor | None = None,
    sigmas=DEFAULT_DIAGNOSTIC_SIGMAS,
    seed: int = 0,
    num_tokens: int | None = None,
) -> dict:
    """Rectified-flow loss with true / shuffled / null registers at fixed noise levels.

    Args:
        model: a [`FlexTokModel`] (evaluated in eval mode, restored afterwards).
        pixel_values (`[B, 3, H, W]` in [-1, 1]) or latents (`[B, C, h, w]`, scaled): at least two images.
        sigmas: noise levels in (0, 1].
        seed: seeds the noise (the same noise for the three conditions of a level).
        num_tokens: condition on the first k registers (default: all K).

    Returns:
        `{"per_sigma": {sigma: {"true", "shuffled", "null", "gap"}}, "gap": mean gap, "num_images": B}`, where
        `gap = (shuffled - true) / shuffled` (relative; 0 when the registers are ignored).
    """
    sigmas = [float(sigma) for sigma in sigmas]
    if not sigmas or any(not 0.0 < sigma <= 1.0 for sigma in sigmas):
        raise ValueError(f"`sigmas` must be a non-empty list of noise levels in (0, 1], got {sigmas}.")
    num_registers = model.config.num_registers
    num_tokens = num_registers if num_tokens is None else int(num_tokens)
    if not 1 <= num_tokens <= num_registers:
        raise ValueError(f"`num_tokens` must be in [1, {num_registers}], got {num_tokens}.")
    was_training = model.training
    model.eval()
    try:
        encoded = model.encode(pixel_values=pixel_values, latents=latents)
        x0, quants = encoded.latents.float(), encoded.quants
        batch = x0.shape[0]
        if batch < 2:
            raise ValueError(f"`token_reliance` needs at least 2 images (it shuffles registers), got {batch}.")
        keep_k = torch.full((batch,), num_tokens, device=x0.device, dtype=torch.long)
        shuffled = quants.roll(1, dims=0)
        null_mask = torch.ones(batch, dtype=torch.bool, device=x0.device)
        generator = torch.Generator(x0.device).manual_seed(seed)
        per_sigma = {}
        for sigma in sigmas:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=torch.float32)
            x_t = sigma * noise + (1 - sigma) * x0
            timesteps = torch.full((batch,), sigma, device=x0.device)
            target = noise - x0
            losses = {}
            for name, codes, mask in (
                ("true", quants, None),
                ("shuffled", shuffled, None),
                ("null", quants, null_mask),
            ):
                velocity = model.predict_velocity(x_t, timesteps, codes, keep_k, mask)
                losses[name] = F.mse_loss(velocity.float(), target).item()
            losses["gap"] = (losses["shuffled"] - losses["true"]) / max(losses["shuffled"], 1e-12)
            per_sigma[sigma] = losses
    finally:
        model.train(was_training)
    gap = sum(entry["gap"] for entry in per_sigma.values()) / len(per_sigma)
    return {"per_sigma": per_sigma, "gap": gap, "num_images": batch}


def flatten_token_reliance(report: dict, prefix: str = "eval") -> dict[str, float]:
    """`token_reliance` output -> flat log keys (`{prefix}_reliance_gap`, `{prefix}_rf_true@1.0`, ...)."""
    logs = {f"{prefix}_reliance_gap": report["gap"]}
    for sigma, losses in report["per_sigma"].items():
        for name in ("true", "shuffled", "null"):
            logs[f"{prefix}_rf_{name}@{sigma:g}"] = losses[name]
    return logs


__all__ = ["DEFAULT_DIAGNOSTIC_SIGMAS", "flatten_token_reliance", "token_reliance"]
