"""One official module's settings, read one key at a time: every key is interpreted, a known no-op, or refused."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .metadata import NO_OP_SETTINGS, OfficialCheckpointError

logger = logging.getLogger(__name__)


@dataclass
class ModuleSettings:
    name: str
    target: str
    args: dict
    consumed: set = field(default_factory=set)
    visited: bool = False

    def get(self, key, default=None):
        self.consumed.add(key)
        return self.args.get(key, default)

    def require(self, key, allowed, default=None):
        """Read `key`; refuse by name if its value is not one of `allowed`."""
        value = self.get(key, default)
        if value not in allowed:
            raise OfficialCheckpointError(
                f"{self.name} ({self.short}): `{key}={value!r}` is not supported by flextok_hf (supported: {allowed})."
            )
        return value

    @property
    def short(self) -> str:
        return self.target.rsplit(".", 1)[-1]

    def finish(self, ignored: tuple[str, ...] = ()):
        """Every argument must have been interpreted or be a known no-op (data-dict keys, init, checkpointing)."""
        self.consumed.update(ignored)
        self.visited = True
        for key in self.args:
            # Data-dict key names (`read_key`, `*_write_key`, `input_list_read_keys`, ...) only route tensors.
            if key in self.consumed or key == "_target_" or key in NO_OP_SETTINGS or key.endswith(("_key", "_keys")):
                continue
            raise OfficialCheckpointError(
                f"{self.name} ({self.short}): unknown setting `{key}={self.args[key]!r}`; refusing rather than "
                f"ignoring it."
            )


def section_modules(section: dict, side: str) -> list[ModuleSettings]:
    if section.get("_target_") != "flextok.model.utils.wrappers.SequentialModuleDictWrapper":
        raise OfficialCheckpointError(
            f"{side} must be a SequentialModuleDictWrapper, got {section.get('_target_')!r}."
        )
    extra = set(section) - {"_target_", "module_dict"}
    if extra:
        raise OfficialCheckpointError(f"{side}: unknown settings {sorted(extra)}.")
    return [ModuleSettings(name, spec.get("_target_", ""), spec) for name, spec in section["module_dict"].items()]


def check_all_visited(modules: list[ModuleSettings], side: str):
    for module in modules:
        if not module.visited:
            raise OfficialCheckpointError(
                f"{side} module {module.name!r} ({module.short}) has no counterpart in flextok_hf; refusing."
            )
        module.finish()


def modules_of_class(
    modules: list[ModuleSettings], short: str, side: str, required: bool = True
) -> list[ModuleSettings]:
    found = [m for m in modules if m.short == short]
    for module in found:
        module.visited = True
    if required and not found:
        raise OfficialCheckpointError(f"{side} has no {short} module; this is not a FlexTok {side} layout.")
    return found


def one_module(modules, short, side, required=True) -> ModuleSettings | None:
    found = modules_of_class(modules, short, side, required)
    if len(found) > 1:
        raise OfficialCheckpointError(f"{side} has {len(found)} {short} modules; flextok_hf supports exactly one.")
    return found[0] if found else None


def per_sample_op_kind(module: ModuleSettings) -> str:
    op = module.get("per_sample_op") or {}
    target = op.get("_target_", "") if isinstance(op, dict) else ""
    if target.endswith("channels_first_to_last"):
        return "to_last"
    if target.endswith("channels_last_to_first"):
        return "to_first"
    raise OfficialCheckpointError(f"{module.name}: unsupported per-sample op {op!r}.")


def patch_embedder_settings(module: ModuleSettings, side: str) -> tuple[int, int, int]:
    sizes = module.get("patch_sizes")
    if not isinstance(sizes, (list, tuple)) or len(sizes) != 2 or sizes[0] != sizes[1]:
        raise OfficialCheckpointError(f"{side} {module.name}: `patch_sizes={sizes!r}` must be a square [p, p].")
    module.require("flatten_patches", (False,), default=True)
    return int(sizes[0]), int(module.get("channels_in")), int(module.get("dim"))


def sincos_grid_side(module: ModuleSettings, side: str) -> int:
    """Check a fixed 2D sin-cos posemb module; returns its (square) maximum grid side."""
    module.require("posemb_type", ("sincos",))
    module.require("posemb_scaling", ("absolute",), default="absolute")
    module.get("dim")
    sizes = module.get("max_sizes")
    if not isinstance(sizes, (list, tuple)) or len(sizes) != 2 or sizes[0] != sizes[1]:
        raise OfficialCheckpointError(f"{side} {module.name}: `max_sizes={sizes!r}` must be a square [n, n].")
    module.finish()
    return int(sizes[0])


def transformer_settings(module: ModuleSettings, side: str, adaln: bool) -> dict:
    t = module
    out = dict(dim=int(t.get("dim", 768)), depth=int(t.get("depth", 12)), head_dim=int(t.get("head_dim", 64)))
    out["mlp_ratio"] = float(t.get("mlp_ratio", 4.0))
    for key in ("qkv_bias", "proj_bias", "mlp_bias"):
        t.require(key, (False,), default=False)
    t.require("gated_mlp", (True,), default=True)
    t.require("qk_norm", (True,), default=True)
    for key in ("drop", "drop_path_rate"):
        value = t.get(key, 0.0)
        if value:
            logger.warning(
                "%s %s: `%s=%s` only affects training; flextok_hf has no dropout.", side, t.name, key, value
            )
    act = t.get("act_layer")
    if act is not None and (not isinstance(act, dict) or act.get("_target_") != "torch.nn.SiLU"):
        raise OfficialCheckpointError(f"{side} {t.name}: `act_layer={act!r}` is not supported (only SiLU).")
    norm = t.get("norm_layer")
    if norm is not None:
        ok = (
            isinstance(norm, dict)
            and norm.get("_target_") == "flextok.model.layers.norm.Fp32LayerNorm"
            and norm.get("elementwise_affine", True) is not True
            and norm.get("bias", True) is not True
        )
        if not ok:
            raise OfficialCheckpointError(f"{side} {t.name}: `norm_layer={norm!r}` is not supported.")
    for key in ("score_mod_read_key", "rope_forward_read_key"):
        if t.get(key) is not None:
            raise OfficialCheckpointError(f"{side} {t.name}: `{key}` (score mods / RoPE) is not supported.")
    has_adaln = t.get("adaLN_emb_read_key") is not None
    if has_adaln != adaln:
        raise OfficialCheckpointError(
            f"{side} {t.name}: adaLN is {'on' if has_adaln else 'off'}; the FlexTok {side} needs it "
            f"{'on' if adaln else 'off'}."
        )
    out["adaln_expansion"] = t.require("adaLN_expansion", (1, 2), default=1)
    if adaln and out["adaln_expansion"] == 2 and t.get("adaLN_packing_fn_read_key") is None:
        raise OfficialCheckpointError(
            f"{side} {t.name}: adaLN_expansion=2 needs a packing function (per-subsequence)."
        )
    out["repa_layers"] = list(t.get("intermediate_layers") or [])
    t.finish()
    return out


def check_readout_head(module: ModuleSettings, side: str):
    """Settings shared by LinearHead / ToPatchesLinearHead: plain fp32 LayerNorm, biased projection, no muP readout."""
    module.require("use_mup_readout", (False,))
    norm = module.get("norm_layer")
    if norm is not None and not (
        isinstance(norm, dict)
        and norm.get("_target_") == "flextok.model.layers.norm.Fp32LayerNorm"
        and norm.get("elementwise_affine", True) is False
        and norm.get("bias", True) is False
    ):
        raise OfficialCheckpointError(f"{side} {module.name}: `norm_layer={norm!r}` is not supported.")
    module.require("proj_bias", (True,), default=True)
    module.require("adaLN_bias", (True,), default=True)
    module.get("dim")
