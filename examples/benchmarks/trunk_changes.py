"""What each change to the decoder trunk bought, measured one at a time on the d12-d12 decoder (random weights).

    python examples/benchmarks/trunk_changes.py            # writes results/trunk_changes.md

The variants are cumulative: "before" restores the previous formulation of every change below it (by swapping the
functions in, inside this process), and each row adds one change back. All variants run round-robin in one process
and each keeps its fastest forward, so drifting machine load affects them alike. The fp32 outputs of every variant
are compared with the current code's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from flextok_hf import FlexTokConfig, layers, modeling_flextok_decoder
from flextok_hf.modeling_flextok_decoder import FlexTokDecoder

RESULTS = Path(__file__).parent / "results"
CURRENT = {
    "norm": layers.fp32_layer_norm,
    "block": layers.FlexTokAdaLNBlock.forward,
    "mlp": layers.FlexTokMLP.forward,
    "posemb": layers.sincos_2d_posemb,
}


# The previous formulations ----------------------------------------------------------------------------------------
def norm_with_upcast(hidden_states, eps=1e-5):
    return F.layer_norm(hidden_states.float(), hidden_states.shape[-1:], eps=eps).to(hidden_states.dtype)


def expanded(params, group_sizes):
    if params.shape[1] == 1:
        return params
    return torch.cat([p[:, None].expand(-1, n, -1) for p, n in zip(params.unbind(1), group_sizes)], dim=1)


def block_with_expanded_modulation(self, hidden_states, temb, group_sizes=()):
    batch, _, dim = hidden_states.shape
    modulation = self.adaln_modulation(temb).view(batch, self.num_groups, 6, dim)
    gate_msa, gate_mlp, shift_msa, scale_msa, shift_mlp, scale_mlp = (
        expanded(modulation[:, :, i], group_sizes) for i in range(6)
    )
    norm = layers.fp32_layer_norm
    hidden_states = hidden_states + gate_msa * self.attn(norm(hidden_states, self.eps) * (1 + scale_msa) + shift_msa)
    return hidden_states + gate_mlp * self.mlp(norm(hidden_states, self.eps) * (1 + scale_mlp) + shift_mlp)


def mlp_out_of_place(self, hidden_states):
    return self.down_proj(F.silu(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


PREVIOUS = {
    "norm": norm_with_upcast,
    "block": block_with_expanded_modulation,
    "mlp": mlp_out_of_place,
    "posemb": layers.sincos_2d_posemb.__wrapped__,  # recomputed at every forward
}
CHANGES = [
    ("norm", "LayerNorm without float32 upcast copies"),
    ("block", "adaLN modulation per token group (no expanded copies, fused multiply-adds)"),
    ("mlp", "SwiGLU in place at inference"),
    ("posemb", "sin-cos table computed once"),
]


def use(kept: set[str]):
    """Current formulation for the changes in `kept`, the previous one for the others."""
    pick = {name: CURRENT[name] if name in kept else PREVIOUS[name] for name in CURRENT}
    layers.fp32_layer_norm = modeling_flextok_decoder.fp32_layer_norm = pick["norm"]
    layers.FlexTokAdaLNBlock.forward = pick["block"]
    layers.FlexTokMLP.forward = pick["mlp"]
    modeling_flextok_decoder.sincos_2d_posemb = pick["posemb"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="2,8", help="sequences per forward (2 = one image with CFG)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=str(RESULTS / "trunk_changes.md"))
    args = parser.parse_args()

    torch.manual_seed(0)
    config = FlexTokConfig.d12_d12()
    config._attn_implementation = "sdpa"
    decoder = FlexTokDecoder(config).eval()
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.normal_(0, 0.02)
    variants = [("before", set())]
    for index, (_, label) in enumerate(CHANGES):
        variants.append((f"+ {label}", {name for name, _ in CHANGES[: index + 1]}))
    lines = [
        "# The decoder trunk, one change at a time (d12-d12, random weights)",
        "",
        f"`python examples/benchmarks/trunk_changes.py`; {torch.get_num_threads()} threads; cumulative variants "
        f"run round-robin, best of {args.rounds} forwards each. Max |diff| is the fp32 velocity against the current "
        "code.",
        "",
    ]
    from tqdm.auto import tqdm

    for dtype in (torch.float32, torch.bfloat16):
        decoder.to(dtype)
        for batch in map(int, args.batch_sizes.split(",")):
            inputs = (
                torch.randn(batch, config.latent_channels, config.latent_size, config.latent_size),
                torch.rand(batch),
                torch.rand(batch, config.num_registers, len(config.fsq_levels)) * 2 - 1,
                torch.full((batch,), config.num_registers),
                torch.arange(batch) >= (batch + 1) // 2,
            )
            best = {name: float("inf") for name, _ in variants}
            outputs = {}
            with torch.no_grad():
                for _ in tqdm(range(args.rounds), desc=f"{dtype} B={batch}", leave=False):
                    for name, kept in variants:
                        use(kept)
                        decoder(*inputs)  # warm-up of this variant
                        start = time.perf_counter()
                        outputs[name] = decoder(*inputs)[0]
                        best[name] = min(best[name], time.perf_counter() - start)
            use(set(CURRENT))
            dtype_name = str(dtype).removeprefix("torch.")
            lines += [
                f"### {dtype_name}, B={batch}",
                "",
                "| variant | forward s | vs before | vs previous row | max abs diff to current |",
                "|---|---|---|---|---|",
            ]
            previous = None
            for name, _ in variants:
                diff = (outputs[name] - outputs[variants[-1][0]]).abs().max().item()
                step = f"{best[previous] / best[name]:.2f}×" if previous else "–"
                lines.append(
                    f"| {name} | {best[name]:.3f} | {best['before'] / best[name]:.2f}× | {step} | {diff:.1e} |"
                )
                previous = name
            lines.append("")
    text = "\n".join(lines)
    print(text)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
