"""FlexTok: a 1D, ordered, variable-length image tokenizer with a rectified-flow decoder (arXiv 2502.13967).

pixels -> (frozen VAE) -> latents -> encoder (ViT + K registers, prefix-LM mask) -> FSQ ids
ids[:k] -> decoder registers (slots >= k hold a mask token) + noised latent patches -> velocity.

The model holds the pieces a sampler needs (`encode`/`tokenize`, `prepare_token_ids`, `prepare_noise`,
`predict_velocity`, `guided_velocity`, `decode_latents`, marked with diffusers' `apply_forward_hook` so CPU offload
moves the model in time); the sampling loop itself lives in `FlexTokPipeline.detokenize`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.utils.accelerate_utils import apply_forward_hook
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_flextok import FlexTokConfig, vae_dtype_name
from .guidance import GuidanceConfig
from .layers import FlexTokAdaLNBlock, FlexTokTimestepEmbedding
from .modeling_flextok_decoder import FlexTokDecoder, FlexTokDecoderHead, FlexTokREPAProjector
from .modeling_flextok_encoder import FlexTokEncoder, prefix_lm_mask
from .modeling_flextok_outputs import FlexTokEncoderOutput, FlexTokOutput
from .modeling_flextok_sampling import FlexTokTrainingSamplingMixin
from .modeling_flextok_vae import float32_posterior, prepare_vae_for_inference, vae_torch_dtype
from .quantizer_fsq import FlexTokFSQ


class FlexTokPreTrainedModel(PreTrainedModel):
    config_class = FlexTokConfig
    config: FlexTokConfig
    base_model_prefix = "flextok"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["FlexTokBlock", "FlexTokAdaLNBlock"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _keep_in_fp32_modules = ["vae"]
    _keep_in_fp32_modules_strict = ["vae"]  # loaded in float32 even for bf16; then run in `config.vae_dtype`
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        """FlexTok init: xavier Linear, zero biases; zero adaLN and readouts; trunc-normal learned vectors."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, FlexTokTimestepEmbedding):
            for linear in (module.linear_1, module.linear_2):
                init.normal_(linear.weight, std=std)
                init.zeros_(linear.bias)
        elif isinstance(module, FlexTokAdaLNBlock):
            init.zeros_(module.adaln_modulation[1].weight)
            init.zeros_(module.adaln_modulation[1].bias)
        elif isinstance(module, FlexTokDecoderHead):
            if module.adaln_modulation is not None:
                init.zeros_(module.adaln_modulation[1].weight)
                init.zeros_(module.adaln_modulation[1].bias)
            init.zeros_(module.proj.weight)
            init.zeros_(module.proj.bias)
        elif isinstance(module, FlexTokEncoder):
            init.trunc_normal_(module.registers, std=std)
            init.zeros_(module.to_codes.weight)
            init.zeros_(module.to_codes.bias)
        elif isinstance(module, FlexTokDecoder):
            for param in (module.register_posemb, module.mask_token, module.null_condition):
                if param is not None:
                    init.trunc_normal_(param, std=std)


class FlexTokModel(FlexTokTrainingSamplingMixin, FlexTokPreTrainedModel):
    """FlexTok tokenizer + rectified-flow detokenizer in one checkpoint.

    - `tokenize(pixel_values)` -> list of `[K]` id tensors (keep any prefix `ids[:k]`, 1 <= k <= K);
    - `detokenize(token_ids, ...)` -> images from id sequences of mixed lengths (through `FlexTokPipeline`'s loop);
    - `forward(pixel_values)` -> the training objective (`FlexTokOutput`, loss first).
    """

    def __init__(self, config: FlexTokConfig):
        super().__init__(config)
        if config.vae_config is not None:
            self.vae = AutoencoderKL.from_config(config.vae_config)
            self.vae.requires_grad_(False)
            # Keep diffusers' own VAE init: transformers' `_init_weights` skips modules flagged as initialized.
            for module in self.vae.modules():
                module._is_hf_initialized = True
            prepare_vae_for_inference(self.vae, vae_torch_dtype(config.vae_dtype))
        else:
            self.vae = None
        self.encoder = FlexTokEncoder(config)
        self.quantizer = FlexTokFSQ(config.fsq_levels)
        self.decoder = FlexTokDecoder(config)
        self.repa_projector = (
            FlexTokREPAProjector(config.decoder_hidden_size, config.repa_projector_dim, config.repa_feature_dim)
            if config.repa_layer is not None
            else None
        )
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus: the `flextok` part of a saved pipeline folder, and official
        apple/ml-flextok checkpoints (folder, `.safetensors` file or Hub id), converted in memory with the allowlisted
        converter (`vae_config=` / `vae=` as in `convert_official_checkpoint`). A `config.json` that is neither a
        FlexTok config nor an official one is refused. See `flextok_hf.loading`. `vae_dtype=` as in `set_vae_dtype`."""
        from .loading import load_flextok_model, release_checkpoint_mapping

        vae_dtype = kwargs.pop("vae_dtype", None)
        if vae_dtype is not None:
            vae_dtype_name(vae_dtype)  # a bad value fails before any weight is read
        loaded = load_flextok_model(super().from_pretrained, pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # `output_loading_info=True` gives a tuple
        # The VAE loads in float32: cast it now, re-lay it out at its first use (a float32 load stays memory-mapped).
        model.config.vae_dtype = vae_dtype_name(model.config.vae_dtype if vae_dtype is None else vae_dtype)
        if model.vae is not None:
            prepare_vae_for_inference(model.vae, vae_torch_dtype(model.config.vae_dtype), channels_last=False)
        release_checkpoint_mapping(model, kwargs.get("dtype", kwargs.get("torch_dtype")))
        return loaded

    # ---------------------------------------------------------------------------------------------------------------
    # Input checks
    # ---------------------------------------------------------------------------------------------------------------
    def _check_pixel_values(self, pixel_values) -> torch.Tensor:
        config = self.config
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if not pixel_values.is_floating_point():
            raise TypeError(f"`pixel_values` must be a float tensor in [-1, 1], got dtype {pixel_values.dtype}.")
        expected = (config.num_channels, config.image_size, config.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"`pixel_values` must have shape [B, {expected[0]}, {expected[1]}, {expected[2]}] (channels, "
                f"image_size x image_size), got {tuple(pixel_values.shape)}."
            )
        return pixel_values

    def _check_latents(self, latents, name: str = "latents") -> torch.Tensor:
        config = self.config
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
            raise TypeError(f"`{name}` must be a float torch.Tensor, got {type(latents).__name__}.")
        expected = (config.latent_channels, config.latent_size, config.latent_size)
        if latents.ndim != 4 or tuple(latents.shape[1:]) != expected:
            raise ValueError(
                f"`{name}` must have shape [B, {', '.join(map(str, expected))}], got {tuple(latents.shape)}."
            )
        return latents

    @apply_forward_hook
    def prepare_token_ids(self, token_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate a batch of id sequences (a list of 1D tensors/lists of mixed lengths, or a `[B, k]` tensor).

        Returns codes `[B, K, d]` (sequences padded with id 0; padded slots are masked) and `keep_k` `[B]`.
        """
        num_registers, codebook = self.config.num_registers, self.config.codebook_size
        if isinstance(token_ids, torch.Tensor):
            if token_ids.ndim == 1:
                token_ids = token_ids[None]
            if token_ids.ndim != 2:
                raise ValueError(f"`token_ids` tensor must be [B, k], got shape {tuple(token_ids.shape)}.")
            token_ids = list(token_ids)
        if not isinstance(token_ids, (list, tuple)) or len(token_ids) == 0:
            raise ValueError("`token_ids` must be a non-empty list of id sequences (one per image).")
        device = self.device
        rows, lengths = [], []
        for index, ids in enumerate(token_ids):
            ids = torch.as_tensor(ids, device=device).reshape(-1)
            if ids.numel() > 0 and (ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex()):
                raise TypeError(f"`token_ids[{index}]` must hold integers, got dtype {ids.dtype}.")
            ids = ids.long()
            if not 1 <= ids.numel() <= num_registers:
                raise ValueError(
                    f"`token_ids[{index}]` has {ids.numel()} ids; each sequence must hold 1 to {num_registers} ids."
                )
            if ids.min() < 0 or ids.max() >= codebook:
                raise ValueError(
                    f"`token_ids[{index}]` contains ids outside [0, {codebook}): min {ids.min().item()}, "
                    f"max {ids.max().item()}."
                )
            rows.append(F.pad(ids, (0, num_registers - ids.numel())))
            lengths.append(ids.numel())
        ids = torch.stack(rows)
        return self.quantizer.ids_to_codes(ids), torch.tensor(lengths, device=device)

    # ---------------------------------------------------------------------------------------------------------------
    # VAE
    # ---------------------------------------------------------------------------------------------------------------
    def set_vae_dtype(self, vae_dtype: str | torch.dtype) -> FlexTokModel:
        """Run the VAE in `vae_dtype` (`"float32"` default, `"bfloat16"`, `"float16"`; kept in `config.vae_dtype`,
        see there). The cast is in place and lossy; latents and images stay float32. Returns the model."""
        self.config.vae_dtype = vae_dtype_name(vae_dtype)
        self._prepare_vae()
        return self

    def _prepare_vae(self) -> nn.Module | None:
        """The VAE in `config.vae_dtype`, channels-last, with the fast inference forwards (`modeling_flextok_vae`)."""
        return (
            None if self.vae is None else prepare_vae_for_inference(self.vae, vae_torch_dtype(self.config.vae_dtype))
        )

    @torch.no_grad()
    def encode_latents(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images `[B, 3, H, W]` in [-1, 1] -> scaled latents `[B, C, h, w]` (float32; VAE in `config.vae_dtype`)."""
        if self.vae is None:
            return pixel_values.float() * self.config.vae_scaling_factor
        vae = self._prepare_vae()
        with torch.autocast(device_type=pixel_values.device.type, enabled=False):
            pixels = pixel_values.to(vae.device, vae.dtype).contiguous(memory_format=torch.channels_last)
            posterior = float32_posterior(vae.encode(pixels).latent_dist)
            latents = posterior.sample(generator) if self.config.vae_sample_posterior else posterior.mode()
        return latents.contiguous() * self.config.vae_scaling_factor

    @torch.no_grad()
    @apply_forward_hook
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents `[B, C, h, w]` -> images `[B, 3, H, W]` (float32, not clamped)."""
        latents = latents.float() / self.config.vae_scaling_factor
        if self.vae is None:
            return latents
        vae = self._prepare_vae()
        with torch.autocast(device_type=latents.device.type, enabled=False):
            latents = latents.to(vae.device, vae.dtype).contiguous(memory_format=torch.channels_last)
            return vae.decode(latents).sample.float().contiguous()

    # ---------------------------------------------------------------------------------------------------------------
    # Tokenize
    # ---------------------------------------------------------------------------------------------------------------
    def encode(self, pixel_values: torch.Tensor | None = None, latents: torch.Tensor | None = None, generator=None):
        """Images (or precomputed scaled `latents`) -> `FlexTokEncoderOutput` (ids, codes, pre-quant, latents)."""
        if (pixel_values is None) == (latents is None):
            raise ValueError("Pass exactly one of `pixel_values` or `latents`.")
        if latents is None:
            latents = self.encode_latents(self._check_pixel_values(pixel_values), generator=generator)
        else:
            latents = self._check_latents(latents).float()
        pre_quant = self.encoder(latents)
        quants = self.quantizer(pre_quant)
        return FlexTokEncoderOutput(
            token_ids=self.quantizer.codes_to_ids(quants), quants=quants, pre_quant=pre_quant, latents=latents
        )

    @torch.no_grad()
    @apply_forward_hook
    def tokenize(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.LongTensor]:
        """Images `[B, 3, H, W]` in [-1, 1] -> B tensors of K ids, ordered coarse to fine."""
        return list(self.encode(pixel_values, generator=generator).token_ids.unbind(0))

    # ---------------------------------------------------------------------------------------------------------------
    # Detokenize
    # ---------------------------------------------------------------------------------------------------------------
    @apply_forward_hook
    def predict_velocity(
        self,
        noised_latents: torch.Tensor,
        timesteps: torch.Tensor,
        quants: torch.Tensor,
        keep_k: torch.Tensor,
        null_condition_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One decoder evaluation: `[B, C, h, w]` at flow times `[B]` in (0, 1] -> velocity `[B, C, h, w]`."""
        return self.decoder(noised_latents, timesteps, quants, keep_k, null_condition_mask)[0]

    @apply_forward_hook
    def guided_velocity(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        quants: torch.Tensor,
        keep_k: torch.Tensor,
        guidance: GuidanceConfig,
    ) -> torch.Tensor:
        """Velocity at scalar flow time `t`; with guidance, both branches run in one batched forward of 2B."""
        batch = latents.shape[0]
        timesteps = t.to(latents.device, torch.float32).expand(batch)
        if not guidance.is_active():
            return self.predict_velocity(latents, timesteps, quants, keep_k)
        null_mask = torch.arange(2 * batch, device=latents.device) >= batch
        velocity = self.predict_velocity(
            latents.repeat(2, 1, 1, 1), timesteps.repeat(2), quants.repeat(2, 1, 1), keep_k.repeat(2), null_mask
        )
        v_cond, v_uncond = velocity.chunk(2)
        return guidance.combine(v_cond, v_uncond, float(t))

    @apply_forward_hook
    def prepare_noise(self, batch_size: int, generator=None, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise `[B, C, h, w]` (float32): `latents` if given, else one draw per sample from `generator`
        (a `torch.Generator` shared across samples, drawn in order, or a list with one generator per sample)."""
        if latents is not None:
            latents = self._check_latents(latents)
            if latents.shape[0] != batch_size:
                raise ValueError(f"`latents` has batch size {latents.shape[0]}, expected {batch_size}.")
            return latents.to(self.device, torch.float32)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators in `generator` for a batch of {batch_size}.")
        shape = (1, self.config.latent_channels, self.config.latent_size, self.config.latent_size)
        draws = [
            randn_tensor(
                shape,
                generator=generator[i] if isinstance(generator, list) else generator,
                device=self.device,
                dtype=torch.float32,
            )
            for i in range(batch_size)
        ]
        return torch.cat(draws)

    @torch.no_grad()
    def detokenize(
        self,
        token_ids,
        num_inference_steps: int = 20,
        guidance_scale: float | Callable[[float], float] = 7.5,
        adaptive_guidance: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        scheduler=None,
        output_type: str = "pt",
        apg_momentum: float = -0.5,
        apg_norm_threshold: float = 2.5,
        callback_on_step_end: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
        progress_bar: bool = True,
    ) -> torch.Tensor:
        """Id sequences (mixed lengths allowed) -> images `[B, 3, H, W]` (float32, not clamped), or the final latents
        `[B, C, h, w]` with `output_type="latent"`.

        Kept for backwards compatibility: a thin wrapper around [`FlexTokPipeline.detokenize`], which owns the sampling
        loop (the same code path). `callback_on_step_end` here is `f(step_index, timestep, latents)` and may return
        replacement latents; `progress_bar` switches the bar on or off.
        """
        from .pipeline_flextok import FlexTokPipeline  # the loop lives in the pipeline; imported late on purpose

        if output_type not in ("pt", "latent"):
            raise ValueError(f"`output_type` must be 'pt' or 'latent', got {output_type!r}.")
        pipe = FlexTokPipeline.from_flextok(self) if scheduler is None else FlexTokPipeline(self, scheduler)
        pipe.set_progress_bar_config(disable=not progress_bar, leave=False, desc="FlexTok decoding")
        step_callback = None
        if callback_on_step_end is not None:

            def step_callback(pipeline, step_index, timestep, callback_kwargs):
                replaced = callback_on_step_end(step_index, timestep, callback_kwargs["latents"])
                return {} if replaced is None else {"latents": replaced}

        return pipe.detokenize(
            token_ids,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            adaptive_guidance=adaptive_guidance,
            generator=generator,
            latents=latents,
            output_type="raw" if output_type == "pt" else "latent",
            callback_on_step_end=step_callback,
            apg_momentum=apg_momentum,
            apg_norm_threshold=apg_norm_threshold,
        )

    # ---------------------------------------------------------------------------------------------------------------
    # Training objective (its random draws: `FlexTokTrainingSamplingMixin`)
    # ---------------------------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        return_loss: bool = True,
        noise: torch.Tensor | None = None,
        sigmas: torch.Tensor | None = None,
        keep_k: torch.Tensor | None = None,
        null_condition_mask: torch.Tensor | None = None,
        repa_target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> FlexTokOutput | tuple:
        """Rectified-flow training step on clean latents x0 (from `pixel_values` via the VAE, or given as `latents`).

        sigma ~ sigmoid(N(mean, std)); x_t = sigma * eps + (1 - sigma) * x0; the decoder, conditioned on the first
        keep_k registers (or on the null condition), predicts v; loss = MSE(v, eps - x0). In training mode keep_k and
        the null-condition mask are drawn (`nested_dropout_mode`, `null_condition_dropout_prob`); in eval mode all K
        registers are kept and nothing is dropped. Each draw (`noise`, `sigmas`, `keep_k`, `null_condition_mask`) may
        be passed to replay a step; otherwise it uses `generator` or the global RNG, in that order.
        `repa_target` (`[B, N', F]` or `[B, F, h', w']` teacher features) adds the REPA term when configured.
        """
        if kwargs:
            raise TypeError(f"FlexTokModel.forward got unexpected arguments: {sorted(kwargs)}.")
        encoded = self.encode(pixel_values=pixel_values, latents=latents)
        x0 = encoded.latents
        batch, device = x0.shape[0], x0.device
        if noise is None:
            noise = randn_tensor(x0.shape, generator=generator, device=device, dtype=torch.float32)
        if sigmas is None:
            sigmas = self.sample_sigmas(batch, generator)
        if keep_k is None:
            if self.training:
                keep_k = self.sample_keep_k(batch, generator)
            else:
                keep_k = torch.full((batch,), self.config.num_registers, device=device, dtype=torch.long)
        if null_condition_mask is None:
            null_condition_mask = self.sample_null_condition_mask(batch, generator)
        noise, sigmas = noise.to(device, torch.float32), sigmas.to(device, torch.float32)
        keep_k, null_condition_mask = keep_k.to(device).long(), null_condition_mask.to(device).bool()

        sigma = sigmas[:, None, None, None]
        x_t = sigma * noise + (1 - sigma) * x0
        target = noise - x0
        output_layer = self.config.repa_layer if repa_target is not None else None
        velocity, repa_hidden = self.decoder(x_t, sigmas, encoded.quants, keep_k, null_condition_mask, output_layer)

        loss = rf_loss = repa_loss = x0_loss = None
        if return_loss:
            rf_loss = F.mse_loss(velocity, target)
            loss = rf_loss
            if self.config.x0_loss_weight > 0:
                x0_loss = F.mse_loss(x_t - sigma * velocity, x0)
                loss = loss + self.config.x0_loss_weight * x0_loss
            if repa_target is not None:
                repa_loss = self.repa_loss(repa_hidden, repa_target)
                loss = loss + self.config.repa_loss_weight * repa_loss
        output = FlexTokOutput(
            loss=loss,
            token_ids=encoded.token_ids,
            velocity=velocity,
            target=target,
            sigmas=sigmas,
            keep_k=keep_k,
            null_condition_mask=null_condition_mask,
            noise=noise,
            rf_loss=rf_loss,
            repa_loss=repa_loss,
            x0_loss=x0_loss,
        )
        return output if return_dict else output.to_tuple()

    def repa_loss(self, decoder_hidden: torch.Tensor, repa_target: torch.Tensor) -> torch.Tensor:
        """REPA term: see [`FlexTokREPAProjector.alignment_loss`]."""
        if self.repa_projector is None:
            raise ValueError("`repa_target` was given but the model has no REPA projector (set `config.repa_layer`).")
        grid = self.config.latent_size // self.config.patch_size
        return self.repa_projector.alignment_loss(decoder_hidden, repa_target, grid)


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


__all__ = [
    "FlexTokModel",
    "FlexTokPreTrainedModel",
    "FlexTokOutput",
    "FlexTokEncoderOutput",
    "FlexTokEncoder",
    "FlexTokDecoder",
    "FlexTokDecoderHead",
    "FlexTokREPAProjector",
    "count_parameters",
    "prefix_lm_mask",
]
