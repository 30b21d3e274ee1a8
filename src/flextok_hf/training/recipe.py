"""Step-dependent training recipes for FlexTok's objective (all off by default: the paper's objective).

A decoder trained from scratch with the rectified-flow loss can learn the unconditional image distribution faster than
the encoder learns to put information into its registers, and then ignore them. [`FlexTokRecipe`] schedules two
levers against that, as a function of the optimizer step only (so a resumed run draws exactly what an uninterrupted
run draws):

- a **deterministic warm start**: for `deterministic_steps` steps every sample has sigma = 1 (pure noise in, so the
  x0 estimate can only come from the registers), all K registers and no null condition: an autoencoder. Over the next
  `deterministic_anneal_steps` the share of such samples falls linearly to `deterministic_fraction`, and the other
  samples follow the model's own draws (logit-normal sigma, nested dropout, null condition);
- a **late nested dropout**: before `nested_dropout_start_step`, k = K for every sample. With
  `deterministic_nested_dropout`, the deterministic samples after that step keep the nested-dropout draw of k too: the
  decoder must then predict x0 from pure noise and the first k tokens alone, which pushes the most information into the
  first tokens.

```python
recipe = FlexTokRecipe(deterministic_steps=1000, deterministic_anneal_steps=1000, deterministic_fraction=0.1)
draws = recipe.draws(model, step=1500, batch_size=16)  # {"sigmas": [16], "keep_k": [16], "null_condition_mask": [16]}
loss = model(pixel_values=images, **draws).loss
```
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FlexTokRecipe:
    """Which parts of each training batch are drawn differently from the model's own objective.

    Args:
        deterministic_steps (`int`): steps at the start where every sample is deterministic (sigma =
            `deterministic_sigma`, k = K, no null condition).
        deterministic_anneal_steps (`int`): steps after those over which the deterministic share falls linearly from 1
            to `deterministic_fraction`.
        deterministic_fraction (`float`): share of deterministic samples after the anneal, in [0, 1].
        deterministic_sigma (`float`): their noise level, in (0, 1].
        nested_dropout_start_step (`int`): steps before which k = K for every sample (no nested dropout).
        deterministic_nested_dropout (`bool`): after `nested_dropout_start_step`, deterministic samples keep their
            nested-dropout k (default: k = K for them).
    """

    deterministic_steps: int = 0
    deterministic_anneal_steps: int = 0
    deterministic_fraction: float = 0.0
    deterministic_sigma: float = 1.0
    nested_dropout_start_step: int = 0
    deterministic_nested_dropout: bool = False

    def __post_init__(self):
        for name in ("deterministic_steps", "deterministic_anneal_steps", "nested_dropout_start_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be an integer >= 0, got {value!r}.")
        if not 0.0 <= self.deterministic_fraction <= 1.0:
            raise ValueError(f"`deterministic_fraction` must be in [0, 1], got {self.deterministic_fraction}.")
        if not 0.0 < self.deterministic_sigma <= 1.0:
            raise ValueError(f"`deterministic_sigma` must be in (0, 1], got {self.deterministic_sigma}.")

    @property
    def is_active(self) -> bool:
        return (
            self.deterministic_steps > 0
            or self.deterministic_anneal_steps > 0
            or self.deterministic_fraction > 0
            or self.nested_dropout_start_step > 0
        )

    def deterministic_share(self, step: int) -> float:
        """Share of deterministic samples at optimizer step `step` (0-based)."""
        if step < self.deterministic_steps:
            return 1.0
        if step < self.deterministic_steps + self.deterministic_anneal_steps:
            progress = (step - self.deterministic_steps) / self.deterministic_anneal_steps
            return 1.0 - progress * (1.0 - self.deterministic_fraction)
        return self.deterministic_fraction

    def draws(self, model, step: int, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """The draws `sigmas`, `keep_k`, `null_condition_mask` (each `[B]`) for one training batch at `step`.

        The model's own draws come first, in its order (`sample_sigmas`, `sample_keep_k`, `sample_null_condition_mask`),
        then one uniform per sample picks the deterministic ones (only when the share is strictly between 0 and 1).
        """
        sigmas = model.sample_sigmas(batch_size, generator)
        keep_k = model.sample_keep_k(batch_size, generator)
        null_condition_mask = model.sample_null_condition_mask(batch_size, generator)
        if step < self.nested_dropout_start_step:
            keep_k = torch.full_like(keep_k, model.config.num_registers)
        share = self.deterministic_share(step)
        if share >= 1.0:
            deterministic = torch.ones(batch_size, dtype=torch.bool, device=sigmas.device)
        elif share <= 0.0:
            deterministic = torch.zeros(batch_size, dtype=torch.bool, device=sigmas.device)
        else:
            gen_device = generator.device if generator is not None else sigmas.device
            deterministic = (torch.rand(batch_size, generator=generator, device=gen_device) < share).to(sigmas.device)
        sigmas = torch.where(deterministic, torch.full_like(sigmas, self.deterministic_sigma), sigmas)
        if not (self.deterministic_nested_dropout and step >= self.nested_dropout_start_step):
            keep_k = torch.where(deterministic, torch.full_like(keep_k, model.config.num_registers), keep_k)
        null_condition_mask = null_condition_mask & ~deterministic
        return {"sigmas": sigmas, "keep_k": keep_k, "null_condition_mask": null_condition_mask}


__all__ = ["FlexTokRecipe"]
