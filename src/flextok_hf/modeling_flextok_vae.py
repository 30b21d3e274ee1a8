"""Inference speed-ups for the frozen diffusers `AutoencoderKL` inside [`FlexTokModel`] (same outputs up to float
rounding, see `tests/test_vae_speed.py`).

- Channels-last weights and activations: oneDNN (CPU) and cuDNN (GPU) run NHWC convolutions without layout reorders.
- Nearest 2x upsampling + 3x3 convolution (diffusers `Upsample2D`) as one 2x2 convolution on the low-resolution input
  whose four output phases are interleaved: every output pixel of the upsampled image sees only 2x2 distinct input
  pixels, so the sum is the same with 16 instead of 36 multiply-adds per input pixel and no upsampled temporary.
- ResNet blocks with in-place activations and residual add (fewer full-resolution temporaries).

[`enable_vae_fast_inference`] swaps the classes of the matching submodules for subclasses that only override `forward`:
parameters, buffers and state-dict keys are untouched, and with autograd enabled (VAE training) or any unusual setting
the diffusers forward runs unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .configuration_flextok import VAE_DTYPES, vae_dtype_name

# Rows (and columns) of a 3x3 kernel seen by the two output phases of a nearest 2x upsampling: phase 0 reads input
# rows (i - 1, i, i) -> taps (w0, w1 + w2); phase 1 reads (i, i, i + 1) -> taps (w0 + w1, w2).
_PHASE_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def vae_torch_dtype(vae_dtype) -> torch.dtype:
    """`"float32"` / `"bfloat16"` / `"float16"` (or the torch dtype) -> torch dtype; anything else: `ValueError`."""
    return getattr(torch, vae_dtype_name(vae_dtype))


def subpixel_upsample_weight(weight: torch.Tensor) -> torch.Tensor:
    """3x3 kernel `[K, C, 3, 3]` -> the 2x2 kernels of the four output phases, `[4K, C, 2, 2]` (phase-major)."""
    taps = torch.tensor(_PHASE_TAPS, dtype=torch.float32, device=weight.device)  # [phase, 2, 3]
    phases = torch.einsum("ayi,bxj,kcij->abkcyx", taps, taps, weight.float())
    return phases.reshape(4 * weight.shape[0], weight.shape[1], 2, 2).to(weight.dtype)


def subpixel_upsample_conv(hidden_states: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(nearest_upsample_2x(hidden_states))` for a 3x3, stride-1, padding-1 `conv`: `[B, C, H, W]` ->
    `[B, K, 2H, 2W]` (channels-last)."""
    batch, _, height, width = hidden_states.shape
    channels = conv.out_channels
    weight = subpixel_upsample_weight(conv.weight).contiguous(memory_format=torch.channels_last)
    bias = None if conv.bias is None else conv.bias.repeat(4)
    # Phase (a, b) of output pixel (i, j) is pixel (i + a, j + b) of the phase's channels of the padded convolution.
    phases = F.conv2d(hidden_states.contiguous(memory_format=torch.channels_last), weight, bias, padding=1)
    phases = phases.contiguous(memory_format=torch.channels_last)  # [B, 4K, H + 1, W + 1], strides (s, 1, r, 4K)
    row, col = phases.stride(2), phases.stride(3)
    # View [B, K, H, 2 (a), W, 2 (b)] of `phases` at (b, (2a + b) K + k, i + a, j + b), copied in one pass.
    source = phases.as_strided(
        (batch, channels, height, 2, width, 2),
        (phases.stride(0), 1, row, 2 * channels + row, col, channels + col),
    )
    output = torch.empty(
        batch, channels, 2 * height, 2 * width, dtype=phases.dtype, device=phases.device,
        memory_format=torch.channels_last,
    )  # fmt: skip
    target = output.permute(0, 2, 3, 1).view(batch, height, 2, width, 2, channels).permute(0, 5, 1, 2, 3, 4)
    target.copy_(source)
    return output


class FlexTokVAEUpsample2D(Upsample2D):
    """diffusers `Upsample2D` whose inference forward runs [`subpixel_upsample_conv`] (nearest 2x + 3x3 conv)."""

    def _subpixel_conv(self) -> nn.Conv2d | None:
        conv = getattr(self, "conv" if self.name == "conv" else "Conv2d_0", None)
        plain = (
            isinstance(conv, nn.Conv2d)
            and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.padding == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.padding_mode == "zeros"
        )
        ok = self.use_conv and self.interpolate and not self.use_conv_transpose and self.norm is None
        return conv if ok and plain else None

    def forward(self, hidden_states: torch.Tensor, output_size: int | None = None, *args, **kwargs) -> torch.Tensor:
        conv = self._subpixel_conv()
        if torch.is_grad_enabled() or output_size is not None or args or kwargs or conv is None:
            return super().forward(hidden_states, output_size, *args, **kwargs)
        return subpixel_upsample_conv(hidden_states, conv)


class FlexTokVAEResnetBlock2D(ResnetBlock2D):
    """diffusers `ResnetBlock2D` whose inference forward (no time embedding, no resampling, SiLU) works in place.

    Without `temb`, the `"default"` and `"group"` time-embedding norms are the same plain GroupNorm path."""

    def _fast_path_ok(self, temb) -> bool:
        return (
            temb is None
            and self.upsample is None
            and self.downsample is None
            and self.time_embedding_norm != "scale_shift"
            and isinstance(self.nonlinearity, nn.SiLU)
            and not (self.training and self.dropout.p > 0)
        )

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        if torch.is_grad_enabled() or args or kwargs or not self._fast_path_ok(temb):
            return super().forward(input_tensor, temb, *args, **kwargs)
        hidden_states = F.silu(self.norm1(input_tensor), inplace=True)
        hidden_states = F.silu(self.norm2(self.conv1(hidden_states)), inplace=True)
        hidden_states = self.conv2(hidden_states)
        shortcut = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor)
        hidden_states.add_(shortcut)
        if self.output_scale_factor != 1.0:
            hidden_states.div_(self.output_scale_factor)
        return hidden_states


_FAST_CLASSES = {Upsample2D: FlexTokVAEUpsample2D, ResnetBlock2D: FlexTokVAEResnetBlock2D}


def enable_vae_fast_inference(vae: nn.Module, channels_last: bool = True) -> nn.Module:
    """Fast-forward subclasses for the `Upsample2D` / `ResnetBlock2D` modules of `vae` and (with `channels_last`)
    channels-last 4D parameters (in place, idempotent, cheap when already done). Returns `vae`."""
    for module in vae.modules():
        fast_class = _FAST_CLASSES.get(type(module))
        if fast_class is not None:
            module.__class__ = fast_class
    params = list(vae.parameters())
    if (
        channels_last
        and _plain_weights(params)
        and any(p.ndim == 4 and not p.is_contiguous(memory_format=torch.channels_last) for p in params)
    ):
        vae.to(memory_format=torch.channels_last)
    return vae


def prepare_vae_for_inference(vae: nn.Module, dtype: torch.dtype, channels_last: bool = True) -> nn.Module:
    """[`enable_vae_fast_inference`] and parameters in `dtype` (cast in place only when they differ). Returns `vae`.

    `channels_last=False` leaves the layout for later (the first encode / decode): a float32 load stays a lazy view of
    the memory-mapped checkpoint instead of copying the VAE at once.
    """
    enable_vae_fast_inference(vae, channels_last=channels_last)
    params = list(vae.parameters())
    if _plain_weights(params) and any(p.is_floating_point() and p.dtype != dtype for p in params):
        nn.Module.to(vae, dtype)  # not diffusers' `ModelMixin.to`, which warns about dtype casts
    return vae


def _plain_weights(params: list[nn.Parameter]) -> bool:
    """Whether the weights may be re-laid-out / cast here: materialized plain tensors (not meta / offloaded, not
    DTensor or other subclasses managed by a distributed wrapper)."""
    return all(not p.is_meta and type(p.data) is torch.Tensor for p in params)


def float32_posterior(posterior: DiagonalGaussianDistribution) -> DiagonalGaussianDistribution:
    """The VAE posterior with float32 parameters (mean, std, and the noise of `sample`), whatever the VAE dtype."""
    if posterior.parameters.dtype == torch.float32:
        return posterior
    return DiagonalGaussianDistribution(posterior.parameters.float(), deterministic=posterior.deterministic)


def disable_vae_fast_inference(vae: nn.Module) -> nn.Module:
    """Undo [`enable_vae_fast_inference`]: diffusers classes and contiguous parameters again. Returns `vae`."""
    plain = {fast: base for base, fast in _FAST_CLASSES.items()}
    for module in vae.modules():
        if type(module) in plain:
            module.__class__ = plain[type(module)]
    vae.to(memory_format=torch.contiguous_format)
    return vae


__all__ = [
    "VAE_DTYPES",
    "FlexTokVAEResnetBlock2D",
    "FlexTokVAEUpsample2D",
    "disable_vae_fast_inference",
    "enable_vae_fast_inference",
    "float32_posterior",
    "prepare_vae_for_inference",
    "subpixel_upsample_conv",
    "subpixel_upsample_weight",
    "vae_torch_dtype",
]
