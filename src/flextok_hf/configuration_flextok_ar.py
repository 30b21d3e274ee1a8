"""Configuration of the FlexTok autoregressive prior (stage 2): a LlamaGen-style GPT over FlexTok ids."""

from __future__ import annotations

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

CONDITION_TYPES = ("class", "text")
_POSITIVE_INT_FIELDS = (
    "codebook_size",
    "max_num_tokens",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "num_classes",
    "text_hidden_size",
    "num_condition_tokens",
)


class FlexTokARConfig(PreTrainedConfig):
    r"""
    Configuration of [`FlexTokARForCausalLM`], a decoder-only transformer (Llama blocks: RMSNorm, SwiGLU, RoPE, no
    biases) that models the ordered FlexTok ids of an image after a fixed-length condition prefix.

    The sequence seen by the transformer is `[c_0 … c_{P-1}, z_0 … z_{k-1}]` with `P = num_condition_tokens`
    condition embeddings and `k ≤ max_num_tokens` image ids `z_i ∈ [0, codebook_size)`; position `P - 1 + i`
    predicts `z_i`. There is no EOS: the user picks `k`.

    Args:
        codebook_size (`int`, defaults to 64000): number of FlexTok ids (product of the FSQ levels).
        max_num_tokens (`int`, defaults to 256): K, the longest image-id sequence.
        hidden_size (`int`, defaults to 768): transformer width D.
        num_hidden_layers (`int`, defaults to 12): number of Llama decoder layers.
        num_attention_heads (`int`, defaults to 12): query heads; head_dim = hidden_size / num_attention_heads.
        num_key_value_heads (`int`, *optional*): key/value heads (grouped-query attention); defaults to
            `num_attention_heads`.
        intermediate_size (`int`, *optional*): SwiGLU hidden width; defaults to `int(8 * hidden_size / 3)`.
        hidden_act (`str`, defaults to `"silu"`): SwiGLU gate activation.
        rms_norm_eps (`float`, defaults to 1e-5): RMSNorm epsilon.
        rope_theta (`float`, defaults to 10000.0): RoPE base over the 1-D sequence position.
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities (training only).
        embedding_dropout (`float`, defaults to 0.0): dropout on the input embeddings, prefix included (training only).
        condition_type (`str`, defaults to `"class"`): `"class"` (class-embedding table with one extra null class)
            or `"text"` (projected text-encoder states with a learned null condition).
        num_classes (`int`, defaults to 1000): number of classes (class conditioning); id `num_classes` is the null
            class.
        text_hidden_size (`int`, defaults to 384): width of the text-encoder states (384 for MiniLM-L6).
        num_condition_tokens (`int`, *optional*): P, the fixed prefix length; 1 for class conditioning (required),
            defaults to 32 for text conditioning (longer prompts are truncated, shorter ones padded).
        condition_dropout_prob (`float`, defaults to 0.1): probability, per training sample, of replacing the
            condition by the null condition (enables classifier-free guidance).
        tie_word_embeddings (`bool`, defaults to `False`): share the input id embedding and the output head (the
            vocabulary dominates a small prior's size).
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation.

    `id2label` (inherited) may map class ids to names for the class-conditional pipeline.

    Presets (`FlexTokARConfig.from_preset(name, **overrides)`, `FLEXTOK_AR_PRESETS`) follow the paper-size family:
    head_dim 64, SwiGLU width int(8D/3), class-conditional with 1000 classes, codebook 64,000, K = 256 (tiny: codebook
    4096, K = 32, 10 classes). Parameter counts measured on the meta device; "transformer" is the decoder layers plus
    the final norm (what the names count), "total" adds the id embedding, the output head and the class table:

    | preset | layers | width | transformer | total (untied) | total (tied) |
    |--------|--------|-------|-------------|----------------|--------------|
    | tiny   | 2      | 64    | 0.09M       | 0.62M          | 0.35M        |
    | 49M    | 10     | 640   | 49.15M      | 131.71M        | 90.75M       |
    | 85M    | 12     | 768   | 84.95M      | 184.03M        | 134.87M      |
    | 201M   | 16     | 1024  | 201.33M     | 333.42M        | 267.89M      |
    | 393M   | 20     | 1280  | 393.24M     | 558.36M        | 476.44M      |
    | 679M   | 24     | 1536  | 679.55M     | 877.70M        | 779.39M      |
    | 1.33B  | 30     | 1920  | 1327.22M    | 1574.90M       | 1452.02M     |
    """

    model_type = "flextok_ar"

    codebook_size: int = 64000
    max_num_tokens: int = 256
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    attention_dropout: float = 0.0
    embedding_dropout: float = 0.0
    condition_type: str = "class"
    num_classes: int = 1000
    text_hidden_size: int = 384
    num_condition_tokens: int | None = None
    condition_dropout_prob: float = 0.1
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        for name in _POSITIVE_INT_FIELDS:
            value = getattr(self, name)
            if value is None and name in ("num_key_value_heads", "intermediate_size", "num_condition_tokens"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.intermediate_size is None:
            self.intermediate_size = int(8 * self.hidden_size / 3)
        if self.num_condition_tokens is None:
            self.num_condition_tokens = 1 if self.condition_type == "class" else 32
        self._validate()
        super().__post_init__(**kwargs)

    def _validate(self):
        if self.codebook_size < 2:
            raise ValueError(f"`codebook_size` must be >= 2, got {self.codebook_size}.")
        if self.condition_type not in CONDITION_TYPES:
            raise ValueError(f"`condition_type` must be one of {CONDITION_TYPES}, got {self.condition_type!r}.")
        if self.condition_type == "class" and self.num_condition_tokens != 1:
            raise ValueError(
                f"`num_condition_tokens` must be 1 for condition_type='class', got {self.num_condition_tokens}."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"`num_key_value_heads` ({self.num_key_value_heads}) must divide `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        for name in ("attention_dropout", "embedding_dropout", "condition_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be a float in [0, 1), got {value!r}.")
        for name in ("rms_norm_eps", "rope_theta", "initializer_range"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"`{name}` must be a positive float, got {value!r}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"`hidden_act` must be an activation name known to transformers, got {self.hidden_act!r}."
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def condition_token_id(self) -> int:
        """Placeholder id marking the P condition slots in `input_ids` (outside the sampled range)."""
        return self.codebook_size

    @property
    def max_sequence_length(self) -> int:
        """P + K: condition prefix plus the longest image-id sequence."""
        return self.num_condition_tokens + self.max_num_tokens

    @classmethod
    def from_preset(cls, name: str, **overrides) -> FlexTokARConfig:
        """Returns a new config of preset `name` (see the class docstring) with `overrides` applied."""
        if name not in _PRESET_KWARGS:
            raise ValueError(f"`name` must be one of {sorted(_PRESET_KWARGS)}, got {name!r}.")
        return cls(**{**_PRESET_KWARGS[name], **overrides})


def _paper_size(num_layers: int, width: int) -> dict:
    return {"num_hidden_layers": num_layers, "hidden_size": width, "num_attention_heads": width // 64}


_PRESET_KWARGS: dict[str, dict] = {
    "tiny": {
        "codebook_size": 4096,
        "max_num_tokens": 32,
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_classes": 10,
    },
    "49M": _paper_size(10, 640),
    "85M": _paper_size(12, 768),
    "201M": _paper_size(16, 1024),
    "393M": _paper_size(20, 1280),
    "679M": _paper_size(24, 1536),
    "1.33B": _paper_size(30, 1920),
}

FLEXTOK_AR_PRESETS: dict[str, FlexTokARConfig] = {name: FlexTokARConfig(**kw) for name, kw in _PRESET_KWARGS.items()}

__all__ = ["FlexTokARConfig", "FLEXTOK_AR_PRESETS"]
