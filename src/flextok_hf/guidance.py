"""Classifier-free guidance (CFG) and adaptive projected guidance (APG, arXiv 2410.02416) on velocities."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance


@dataclass
class GuidanceConfig:
    """How the conditional and unconditional velocities are combined.

    `guidance_scale` w may be a float or a callable `w(t)` of the flow time t in (0, 1]. With `adaptive_guidance`,
    APG (momentum `apg_momentum`, norm threshold `apg_norm_threshold`, parallel weight `apg_eta`) is used; norms are
    taken per sample over (C, H, W). The momentum buffer is per call: create a new config (or call `reset`) per
    sampling run.
    """

    guidance_scale: float | object = 1.0
    adaptive_guidance: bool = False
    apg_momentum: float = -0.5
    apg_norm_threshold: float = 2.5
    apg_eta: float = 0.0
    _momentum_buffer: MomentumBuffer | None = field(default=None, init=False, repr=False)

    def scale_at(self, t: float) -> float:
        return float(self.guidance_scale(t)) if callable(self.guidance_scale) else float(self.guidance_scale)

    def is_active(self) -> bool:
        """CFG runs when the scale is callable or differs from 1 (as in the official sampler)."""
        return callable(self.guidance_scale) or float(self.guidance_scale) != 1.0

    def reset(self):
        self._momentum_buffer = None

    def combine(self, v_cond: torch.Tensor, v_uncond: torch.Tensor, t: float) -> torch.Tensor:
        """Guided velocity `[B, C, H, W]` from the two branches at flow time t."""
        scale = self.scale_at(t)
        if not self.adaptive_guidance:
            return v_uncond + scale * (v_cond - v_uncond)
        if self._momentum_buffer is None:
            self._momentum_buffer = MomentumBuffer(self.apg_momentum)
        # diffusers' original formulation is v_c + s * update; FlexTok's APG is v_c + (w - 1) * update.
        return normalized_guidance(
            v_cond,
            v_uncond,
            scale - 1.0,
            momentum_buffer=self._momentum_buffer,
            eta=self.apg_eta,
            norm_threshold=self.apg_norm_threshold,
            use_original_formulation=True,
            norm_dim=(1, 2, 3),
        )
