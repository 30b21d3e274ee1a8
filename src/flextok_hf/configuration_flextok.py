"""FlexTok configuration."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

NESTED_DROPOUT_MODES = ("uniform", "pow2", "uniform_pow2")
NULL_CONDITION_MODES = ("learned", "zero")
REGISTER_POSEMB_TYPES = ("learnable_sum", "none")
VAE_DTYPES = ("float32", "bfloat16", "float16")


def vae_dtype_name(vae_dtype) -> str:
    """`"bfloat16"`, `torch.bfloat16` or `"torch.bfloat16"` -> `"bfloat16"`; a `ValueError` for anything else."""
    name = (
        str(vae_dtype).removeprefix("torch.")
        if isinstance(vae_dtype, str) or hasattr(vae_dtype, "is_signed")
        else None
    )
    if name not in VAE_DTYPES:
        raise ValueError(f"`vae_dtype` must be one of {VAE_DTYPES} (or the torch dtype), got {vae_dtype!r}.")
    return name


def _check_type(name: str, value, types, allow_none: bool = False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise TypeError(f"`{name}` must be of type {types}, got bool {value!r}.")
    if not isinstance(value, types):
        raise TypeError(f"`{name}` must be of type {types}, got {type(value).__name__} {value!r}.")


def _check_positive_int(name: str, value):
    _check_type(name, value, int)
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value}.")


class FlexTokConfig(PreTrainedConfig):
    r"""
    Configuration of a [`FlexTokModel`]: frozen VAE (or pixel space) -> ViT encoder with registers -> FSQ -> rectified-flow
    decoder. Defaults describe the paper's d18-d28 model on 256x256 images with the 16-channel f8 VAE.

    Args:
        image_size (`int`): side of the square input images in pixels.
        num_channels (`int`): image channels (3).
        vae_config (`dict`, *optional*): config of a diffusers `AutoencoderKL` (as in its `config.json`). `None` runs
            FlexTok in pixel space (latents are the images themselves), which suits small images.
        vae_scaling_factor (`float`): latents are `VAE mode (or sample) * vae_scaling_factor`; no shift.
        vae_sample_posterior (`bool`): sample the VAE posterior instead of taking its mode when tokenizing.
        vae_dtype (`str`): dtype the VAE runs in, one of `"float32"` (default), `"bfloat16"` (opt-in: several times
            faster on CPUs with AMX / bf16 units, decoded images within ~40+ dB PSNR of float32) or `"float16"`.
            Latents and images stay float32. Settable as `FlexTokModel.from_pretrained(path, vae_dtype="bfloat16")`
            or `model.set_vae_dtype(torch.bfloat16)`.
        patch_size (`int`): side of the square latent patches of encoder and decoder.
        encoder_hidden_size / decoder_hidden_size (`int`): transformer widths.
        encoder_num_layers / decoder_num_layers (`int`): transformer depths.
        encoder_head_dim / decoder_head_dim (`int`): attention head size; heads = width / head_dim.
        mlp_ratio (`float`): SwiGLU hidden size is `int(2 * mlp_ratio * width / 3)`.
        num_registers (`int`): K, the number of register tokens = the maximum token budget.
        fsq_levels (`list[int]`): FSQ levels per code dimension; the codebook has `prod(fsq_levels)` ids.
        nested_dropout_mode (`str`): how the decoder's keep_k is drawn in training: `"uniform"` (k ~ U{1..K}),
            `"pow2"` (k ~ U{1, 2, 4, ..., K}) or `"uniform_pow2"` (k ~ U{1..K} rounded up to a power of two).
        null_condition_mode (`str`): `"learned"` (one learned vector overwrites every register slot) or `"zero"`.
        null_condition_dropout_prob (`float`): probability of dropping a sample's registers to the null condition in
            training (classifier-free guidance).
        register_posemb_type (`str`): decoder register position embedding, `"learnable_sum"` or `"none"`.
        max_timestep (`float`): time-embedding angles are `t * (1000 / max_timestep) * 256**(-i/128)`.
        time_embedding_size (`int`): size of the sinusoidal time features.
        adaln_expansion (`int`): 2 = separate adaLN modulation for patch and register tokens, 1 = shared.
        head_adaln (`bool`): whether the decoder's final head is adaLN-modulated by the time embedding.
        layer_norm_eps (`float`): epsilon of the parameter-free LayerNorms (pre-norm, QK-norm, heads).
        logit_normal_mean / logit_normal_std (`float`): sigma ~ sigmoid(N(mean, std)) in training.
        uniform_sigma_fraction (`float`): share of training samples whose sigma is drawn from U(0, 1) instead (0 = the
            paper's logit-normal only).
        normalize_registers (`bool`): parameter-free LayerNorm of the decoder's register tokens after the code
            projection (opt-in; off in the paper).
        repa_* : optional REPA alignment of an intermediate decoder layer (off by default).
        initializer_range (`float`): std of the trunc-normal init of registers, mask token and null condition.

    Presets (parameter counts without the 83.8 M-parameter VAE; `tests/test_modeling_flextok.py` recounts them):

    - `FlexTokConfig.d12_d12()`: 257,437,510 (encoder 85,185,798; decoder 172,251,712)
    - `FlexTokConfig.d18_d18()`: 865,323,718 (encoder 287,031,174; decoder 578,292,544)
    - `FlexTokConfig.d18_d28()`: 2,456,308,166 (encoder 287,031,174; decoder 2,169,276,992)
    - `FlexTokConfig.cpu_32px()`: a pixel-space 32x32 model for CPU training (5,520,628).
    - `FlexTokConfig.tiny()`: a pixel-space 16x16 model for tests (336,246).
    """

    model_type = "flextok"

    image_size: int = 256
    num_channels: int = 3
    vae_config: dict | None = None
    vae_scaling_factor: float = 1.0
    vae_sample_posterior: bool = False
    vae_dtype: str = "float32"
    patch_size: int = 2
    encoder_hidden_size: int = 1152
    encoder_num_layers: int = 18
    encoder_head_dim: int = 64
    decoder_hidden_size: int = 1792
    decoder_num_layers: int = 28
    decoder_head_dim: int = 64
    mlp_ratio: float = 4.0
    num_registers: int = 256
    fsq_levels: list[int] | None = None
    nested_dropout_mode: str = "uniform"
    null_condition_mode: str = "learned"
    null_condition_dropout_prob: float = 0.2
    register_posemb_type: str = "learnable_sum"
    max_timestep: float = 1.0
    time_embedding_size: int = 256
    adaln_expansion: int = 2
    head_adaln: bool = True
    layer_norm_eps: float = 1e-5
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    uniform_sigma_fraction: float = 0.0
    normalize_registers: bool = False
    repa_layer: int | None = None
    repa_loss_weight: float = 0.5
    repa_feature_dim: int | None = None
    repa_projector_dim: int = 2048
    x0_loss_weight: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.fsq_levels is None:
            self.fsq_levels = [8, 8, 8, 5, 5, 5]
        self.fsq_levels = [int(v) for v in self.fsq_levels]
        if self.vae_config is not None:
            self.vae_config = dict(self.vae_config)
        self.vae_dtype = vae_dtype_name(self.vae_dtype)
        self.validate_flextok()
        super().__post_init__(**kwargs)

    def validate_flextok(self):
        """Raise `ValueError`/`TypeError` naming the offending field."""
        for name in (
            "image_size",
            "num_channels",
            "patch_size",
            "encoder_hidden_size",
            "encoder_num_layers",
            "encoder_head_dim",
            "decoder_hidden_size",
            "decoder_num_layers",
            "decoder_head_dim",
            "num_registers",
            "time_embedding_size",
        ):
            _check_positive_int(name, getattr(self, name))
        for name in ("vae_scaling_factor", "mlp_ratio", "max_timestep", "layer_norm_eps", "initializer_range"):
            _check_type(name, getattr(self, name), (int, float))
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}.")
        _check_type("vae_config", self.vae_config, dict, allow_none=True)
        _check_type("vae_sample_posterior", self.vae_sample_posterior, bool)
        vae_dtype_name(self.vae_dtype)
        _check_type("head_adaln", self.head_adaln, bool)
        _check_type("normalize_registers", self.normalize_registers, bool)
        _check_type("uniform_sigma_fraction", self.uniform_sigma_fraction, (int, float))
        if not 0.0 <= self.uniform_sigma_fraction <= 1.0:
            raise ValueError(f"`uniform_sigma_fraction` must be in [0, 1], got {self.uniform_sigma_fraction}.")
        for side in ("encoder", "decoder"):
            width, head_dim = getattr(self, f"{side}_hidden_size"), getattr(self, f"{side}_head_dim")
            if width % head_dim != 0:
                raise ValueError(
                    f"`{side}_hidden_size` ({width}) must be a multiple of `{side}_head_dim` ({head_dim})."
                )
        if len(self.fsq_levels) == 0 or any(level < 2 for level in self.fsq_levels):
            raise ValueError(f"`fsq_levels` must be a non-empty list of integers >= 2, got {self.fsq_levels}.")
        if self.nested_dropout_mode not in NESTED_DROPOUT_MODES:
            raise ValueError(
                f"`nested_dropout_mode` must be one of {NESTED_DROPOUT_MODES}, got {self.nested_dropout_mode!r}."
            )
        if self.nested_dropout_mode != "uniform" and self.num_registers & (self.num_registers - 1):
            raise ValueError(
                f"`nested_dropout_mode={self.nested_dropout_mode!r}` needs `num_registers` to be a power of two, "
                f"got {self.num_registers}."
            )
        if self.null_condition_mode not in NULL_CONDITION_MODES:
            raise ValueError(
                f"`null_condition_mode` must be one of {NULL_CONDITION_MODES}, got {self.null_condition_mode!r}."
            )
        if self.register_posemb_type not in REGISTER_POSEMB_TYPES:
            raise ValueError(
                f"`register_posemb_type` must be one of {REGISTER_POSEMB_TYPES}, got {self.register_posemb_type!r}."
            )
        if not 0.0 <= self.null_condition_dropout_prob <= 1.0:
            raise ValueError(
                f"`null_condition_dropout_prob` must be in [0, 1], got {self.null_condition_dropout_prob}."
            )
        if self.adaln_expansion not in (1, 2):
            raise ValueError(f"`adaln_expansion` must be 1 or 2, got {self.adaln_expansion}.")
        if self.time_embedding_size % 2:
            raise ValueError(f"`time_embedding_size` must be even, got {self.time_embedding_size}.")
        if self.repa_layer is not None and not 0 <= self.repa_layer < self.decoder_num_layers:
            raise ValueError(
                f"`repa_layer` must be None or in [0, decoder_num_layers={self.decoder_num_layers}), got {self.repa_layer}."
            )
        if self.repa_layer is not None and self.repa_feature_dim is None:
            raise ValueError("`repa_feature_dim` (the teacher's feature size) is required when `repa_layer` is set.")
        if self.x0_loss_weight < 0:
            raise ValueError(f"`x0_loss_weight` must be >= 0, got {self.x0_loss_weight}.")
        grid = self.latent_size
        if self.image_size % self.vae_downsample_factor or grid % self.patch_size:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be divisible by the VAE factor ({self.vae_downsample_factor}) "
                f"times `patch_size` ({self.patch_size})."
            )

    # Derived quantities -------------------------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return self.num_channels if self.vae_config is None else int(self.vae_config.get("latent_channels", 4))

    @property
    def vae_downsample_factor(self) -> int:
        if self.vae_config is None:
            return 1
        return 2 ** (len(self.vae_config.get("block_out_channels", (64,))) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the (square) latent grid the transformers see, in latent cells."""
        return self.image_size // self.vae_downsample_factor

    @property
    def num_patches(self) -> int:
        return (self.latent_size // self.patch_size) ** 2

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels)

    # Presets ------------------------------------------------------------------------------------------------------
    @staticmethod
    def released_vae_config(latent_channels: int = 16) -> dict:
        """The SDXL-like `AutoencoderKL` shape of the released FlexTok VAEs (`EPFL-VILAB/flextok_vae_c*`)."""
        return {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,
            "act_fn": "silu",
            "latent_channels": latent_channels,
            "norm_num_groups": 32,
            "sample_size": 256,
        }

    @classmethod
    def _paper(cls, enc_depth: int, dec_depth: int, **kwargs) -> FlexTokConfig:
        defaults = dict(
            image_size=256,
            vae_config=cls.released_vae_config(16),
            patch_size=2,
            encoder_hidden_size=64 * enc_depth,
            encoder_num_layers=enc_depth,
            decoder_hidden_size=64 * dec_depth,
            decoder_num_layers=dec_depth,
            num_registers=256,
        )
        defaults.update(kwargs)
        return cls(**defaults)

    @classmethod
    def d12_d12(cls, **kwargs) -> FlexTokConfig:
        """The paper's d12-d12 tokenizer (width 768 encoder and decoder)."""
        return cls._paper(12, 12, **kwargs)

    @classmethod
    def d18_d18(cls, **kwargs) -> FlexTokConfig:
        """The paper's d18-d18 tokenizer (width 1152 encoder and decoder)."""
        return cls._paper(18, 18, **kwargs)

    @classmethod
    def d18_d28(cls, **kwargs) -> FlexTokConfig:
        """The paper's d18-d28 tokenizer (width 1152 encoder, 1792 decoder)."""
        return cls._paper(18, 28, **kwargs)

    @classmethod
    def cpu_32px(cls, **kwargs) -> FlexTokConfig:
        """A 5.5 M-parameter pixel-space 32x32 model (patch 4, 32 registers, width 192, depth 4 + 4, pow2 nested
        dropout) sized for CPU training; the shipped default tokenizer is this preset with a narrower encoder."""
        defaults = dict(
            image_size=32,
            vae_config=None,
            patch_size=4,
            encoder_hidden_size=192,
            encoder_num_layers=4,
            encoder_head_dim=64,
            decoder_hidden_size=192,
            decoder_num_layers=4,
            decoder_head_dim=64,
            num_registers=32,
            nested_dropout_mode="pow2",
        )
        defaults.update(kwargs)
        return cls(**defaults)

    @classmethod
    def tiny(cls, **kwargs) -> FlexTokConfig:
        """A pixel-space 16x16 model with 8 registers and width 64, for tests."""
        defaults = dict(
            image_size=16,
            vae_config=None,
            patch_size=4,
            encoder_hidden_size=64,
            encoder_num_layers=2,
            encoder_head_dim=32,
            decoder_hidden_size=64,
            decoder_num_layers=2,
            decoder_head_dim=32,
            num_registers=8,
        )
        defaults.update(kwargs)
        return cls(**defaults)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> FlexTokConfig:
        """`PreTrainedConfig.from_pretrained`, plus: the `flextok` part of a saved pipeline folder and official
        apple/ml-flextok checkpoints (their converted config). A config.json that is neither a FlexTok config nor an
        official one raises `flextok_hf.loading.NotAFlexTokModelError` instead of giving a config of defaults."""
        from .loading import flextok_config_for

        return flextok_config_for(pretrained_model_name_or_path, _load_saved=super().from_pretrained, **kwargs)


__all__ = ["FlexTokConfig"]
