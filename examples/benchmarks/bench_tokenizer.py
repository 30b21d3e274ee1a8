"""Tokenize / detokenize throughput and peak memory of FlexTokModel on this machine.

    python examples/benchmarks/bench_tokenizer.py                  # tiny + d12, fp32 and bf16, CFG on/off
    python examples/benchmarks/bench_tokenizer.py --presets tiny --batch-sizes 1,8,32

Each configuration runs in a fresh subprocess so that its peak resident memory (VmHWM) is its own. Weights are random
(speed does not depend on them). Also reports the decoder's achieved GFLOP/s (transformer matmuls only), to compare
with the machine's matmul ceiling (about 172 GFLOP/s fp32 and 431 GFLOP/s bf16 on 2 Zen 4 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def decoder_gflop_per_pass(config) -> float:
    """Matmul FLOPs of one decoder forward for one sample (2 * multiply-adds), attention included."""
    tokens = config.num_patches + config.num_registers
    dim, layers = config.decoder_hidden_size, config.decoder_num_layers
    hidden = int(2 * config.mlp_ratio * dim / 3)
    per_layer = 2 * tokens * (4 * dim * dim + 3 * dim * hidden) + 2 * 2 * tokens * tokens * dim
    return per_layer * layers / 1e9


def run_one(preset: str, batch: int, dtype: str, cfg: bool, steps: int, repeats: int) -> dict:
    import torch

    from flextok_hf import FlexTokConfig, FlexTokModel

    torch.manual_seed(0)
    config = getattr(FlexTokConfig, preset)()
    model = FlexTokModel(config).eval()
    images = torch.rand(batch, 3, config.image_size, config.image_size) * 2 - 1
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
    guidance = 7.5 if cfg else 1.0

    def timed(fn):
        fn()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    with torch.no_grad(), autocast:
        tokens = model.tokenize(images)
        t_tok = timed(lambda: model.tokenize(images))
        t_detok = timed(
            lambda: model.detokenize(tokens, num_inference_steps=steps, guidance_scale=guidance, progress_bar=False)
        )
        latents = torch.randn(
            batch * (2 if cfg else 1), config.latent_channels, config.latent_size, config.latent_size
        )
        quants = model.quantizer.ids_to_codes(torch.stack(tokens)).repeat(2 if cfg else 1, 1, 1)
        keep = torch.full((latents.shape[0],), config.num_registers)
        t_pass = timed(lambda: model.predict_velocity(latents, torch.full((latents.shape[0],), 0.5), quants, keep))
    with open("/proc/self/status") as f:
        peak_mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    gflop = decoder_gflop_per_pass(config) * latents.shape[0]
    return {
        "preset": preset,
        "batch": batch,
        "dtype": dtype,
        "cfg": cfg,
        "steps": steps,
        "tokenize_img_s": batch / t_tok,
        "detokenize_img_s": batch / t_detok,
        "decoder_pass_s": t_pass,
        "decoder_gflops": gflop / t_pass,
        "peak_rss_mb": peak_mb,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,d12_d12")
    parser.add_argument("--batch-sizes", default=None, help="default: 1,4,16 for tiny and 1,2 for the paper presets")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=None, help="decoder steps (default: 20 tiny, 2 paper presets)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(run_one(**json.loads(args._child))))
        return

    rows = []
    for preset in args.presets.split(","):
        small = preset == "tiny"
        batches = args.batch_sizes or ("1,4,16" if small else "1,2")
        steps = args.steps or (20 if small else 2)
        for batch in map(int, batches.split(",")):
            for dtype in args.dtypes.split(","):
                for cfg in (False, True):
                    spec = dict(preset=preset, batch=batch, dtype=dtype, cfg=cfg, steps=steps, repeats=args.repeats)
                    print(f"running {spec} ...", file=sys.stderr, flush=True)
                    out = subprocess.run(
                        [sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True, text=True
                    )
                    if out.returncode:
                        print(out.stderr[-2000:], file=sys.stderr)
                        continue
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    header = "| preset | batch | dtype | CFG | steps | tokenize img/s | detokenize img/s | decoder pass s | decoder GFLOP/s | peak RSS MB |"
    print(header)
    print("|---" * 10 + "|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['batch']} | {r['dtype']} | {'on' if r['cfg'] else 'off'} | {r['steps']} | "
            f"{r['tokenize_img_s']:.2f} | {r['detokenize_img_s']:.3f} | {r['decoder_pass_s']:.3f} | "
            f"{r['decoder_gflops']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
