"""Throughput of the paper's d12-d12 FlexTok on this machine, against the same run's matmul peak.

    python examples/benchmarks/bench_throughput.py                       # writes results/throughput.md
    python examples/benchmarks/bench_throughput.py --before-src ../old/src  # adds a "before" column per number

Every configuration runs in a fresh subprocess (its peak resident memory is its own). Weights are random: speed does
not depend on them. The claims are ratios measured inside one process, never absolute times:

- **trunk / peak**: FLOPs of the decoder blocks' linears and attention (a forward over B sequences of 256 patches + 256
  registers) per second, over the best `torch.mm` GFLOP/s of square matrices measured in the same process right
  before and after (fp32 and bf16 weights, B = 1 and 8); a `torch.profiler` top-10 of the B = 8 forward;
- **seconds per CFG step** (one decoder forward of 2B) and the VAE decoder's share of a 4-step CFG call;
- tokenize / detokenize images per second (4 steps, CFG 7.5 with APG), and the peak memory of a call;
- the resident memory of `from_pretrained` in fp32 (memory-mapped safetensors) and with `dtype=torch.bfloat16`.

With `--before-src`, each job also runs on that source tree (e.g. a checkout of an older commit), interleaved with
this one, and the tables give before / after / ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


# ---------------------------------------------------------------------------------------------------------------------
# Child side: one job per process
# ---------------------------------------------------------------------------------------------------------------------
def trunk_gflop(config, batch: int, parts: bool = False):
    """FLOPs (2 x multiply-adds) of the decoder blocks' linears + attention for `batch` sequences, in GFLOP (with
    `parts`, the two separately)."""
    tokens = config.num_patches + config.num_registers
    dim, layers = config.decoder_hidden_size, config.decoder_num_layers
    hidden = int(2 * config.mlp_ratio * dim / 3)
    linear = batch * layers * 2 * tokens * (4 * dim * dim + 3 * dim * hidden) / 1e9
    attention = batch * layers * 2 * 2 * tokens * tokens * dim / 1e9
    return (linear, attention) if parts else linear + attention


def best_time(repeats: int, fn, *args, warmup: bool = True, **kwargs) -> float:
    """Minimum wall time of `fn(*args, **kwargs)` over `repeats` calls (after one warm-up call)."""
    if warmup:
        fn(*args, **kwargs)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best


def mm_peak_gflops(dtype) -> float:
    """Best `torch.mm` GFLOP/s over square sizes 1024-3072 (the machine's matmul ceiling in this process)."""
    import torch

    best = 0.0
    for size in (1024, 2048, 3072):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        best = max(best, 2 * size**3 / best_time(5, torch.mm, a, b) / 1e9)
    return best


def reset_peak_rss():
    """Resets the process's VmHWM (Linux) so that the next `peak_rss_mb` is the peak since now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def random_d12(dtype):
    import torch

    from flextok_hf import FlexTokConfig, FlexTokModel

    torch.manual_seed(0)
    model = FlexTokModel(FlexTokConfig.d12_d12()).eval()
    # adaLN-zero initialises the modulation to zero; random values make every op do real work.
    for parameter in model.decoder.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    # The encoder and decoder take the dtype; the VAE keeps its own (float32 unless opted out).
    model.encoder.to(dtype)
    model.decoder.to(dtype)
    return model


def job_trunk(dtype_name: str, repeats: int) -> dict:
    import torch
    from torch.profiler import profile

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    model = random_d12(dtype)
    config, decoder = model.config, model.decoder
    out = {"threads": torch.get_num_threads()}
    with torch.no_grad():
        peak = mm_peak_gflops(dtype)
        for batch in (1, 2, 8):
            latents = torch.randn(batch, config.latent_channels, config.latent_size, config.latent_size)
            quants = torch.rand(batch, config.num_registers, len(config.fsq_levels)) * 2 - 1
            keep = torch.full((batch,), config.num_registers)
            null = torch.arange(batch) >= (batch + 1) // 2
            timesteps = torch.rand(batch)
            seconds = best_time(repeats, decoder, latents, timesteps, quants, keep, null)
            out[f"trunk_s_b{batch}"] = seconds
            out[f"trunk_gflops_b{batch}"] = trunk_gflop(config, batch) / seconds
            if batch == 8:
                with profile() as prof:
                    decoder(latents, timesteps, quants, keep, null)
                events = prof.key_averages()
                averages = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
                total = sum(e.self_cpu_time_total for e in events)
                matmul_s = sum(e.self_cpu_time_total for e in events if e.key == "aten::mm") / 1e6
                attention_s = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key) / 1e6
                linear_gflop, attention_gflop = trunk_gflop(config, batch, parts=True)
                out["linear_gflops_b8"] = linear_gflop / matmul_s
                out["attention_gflops_b8"] = attention_gflop / attention_s
                out["elementwise_share_b8"] = 1 - (matmul_s + attention_s) * 1e6 / total
                # The trunk's ceiling if everything but the matmuls and the attention kernel were free.
                out["ceiling_gflops_b8"] = (linear_gflop + attention_gflop) / (matmul_s + attention_s)
                out["profile_b8"] = [
                    [e.key, e.count, e.self_cpu_time_total / 1e3, e.self_cpu_time_total / total] for e in averages
                ]
        peak = max(peak, mm_peak_gflops(dtype))
    out["mm_peak_gflops"] = peak
    for batch in (1, 2, 8):
        out[f"trunk_peak_fraction_b{batch}"] = out[f"trunk_gflops_b{batch}"] / peak
    for key in ("linear", "attention", "ceiling"):
        out[f"{key}_peak_fraction_b8"] = out[f"{key}_gflops_b8"] / peak
    # A CFG step of one image is one decoder forward over 2 sequences.
    out["cfg_step_s_b1"] = out["trunk_s_b2"]
    return out


def detokenize(model, tokens, steps: int):
    """The issue's reference call: `steps` Euler steps, CFG 7.5 with APG, a fixed seed."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return model.detokenize(
        tokens, num_inference_steps=steps, guidance_scale=7.5, generator=generator, progress_bar=False
    )


def job_pipeline(dtype_name: str, repeats: int, steps: int, batches: list[int], vae_dtype: str | None = None) -> dict:
    import torch

    from flextok_hf import FlexTokModel

    if vae_dtype is not None and not hasattr(FlexTokModel, "set_vae_dtype"):
        return {}  # a tree without the `vae_dtype` option
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    model = random_d12(dtype)
    if vae_dtype is not None:
        model.set_vae_dtype(vae_dtype)
    config = model.config
    out = {"threads": torch.get_num_threads()}
    with torch.no_grad():
        for batch in batches:
            # Large batches: one timed call, warmed up by the smaller batch before it.
            calls, warmup = (repeats, True) if batch == batches[0] else (1, False)
            images = torch.rand(batch, 3, config.image_size, config.image_size) * 2 - 1
            reset_peak_rss()
            base = current_rss_mb()
            out[f"tokenize_img_s_b{batch}"] = batch / best_time(calls, model.tokenize, images, warmup=warmup)
            out[f"tokenize_peak_mb_b{batch}"] = peak_rss_mb() - base
            tokens = model.tokenize(images[:1]) * batch  # the same ids for every image; speed does not depend on them

            reset_peak_rss()
            base = current_rss_mb()
            seconds = best_time(calls, detokenize, model, tokens, steps, warmup=warmup)
            out[f"detokenize_img_s_b{batch}"] = batch / seconds
            out[f"detokenize_peak_mb_b{batch}"] = peak_rss_mb() - base
            latents = torch.randn(batch, config.latent_channels, config.latent_size, config.latent_size)
            vae_seconds = best_time(calls, model.decode_latents, latents, warmup=warmup)
            out[f"vae_decode_s_b{batch}"] = vae_seconds
            out[f"vae_share_b{batch}"] = vae_seconds / seconds
            out[f"vae_share_20_steps_b{batch}"] = vae_seconds / (vae_seconds + (seconds - vae_seconds) * 20 / steps)
    return out


def job_load(dtype_name: str, path: str) -> dict:
    import torch

    from flextok_hf import FlexTokModel

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    reset_peak_rss()
    base = current_rss_mb()
    model = FlexTokModel.from_pretrained(path, dtype=dtype)
    size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return {"load_peak_mb": peak_rss_mb() - base, "load_rss_mb": current_rss_mb() - base, "weights_mb": size_mb}


def child(spec: dict):
    kind = spec.pop("job")
    result = {"trunk": job_trunk, "pipeline": job_pipeline, "load": job_load}[kind](**spec)
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------------------------------
def run_child(spec: dict, src: str | None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(src).resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run(
        [sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise RuntimeError(f"job {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def save_d12(path: str):
    import torch

    from flextok_hf import FlexTokConfig, FlexTokModel

    torch.manual_seed(0)
    FlexTokModel(FlexTokConfig.d12_d12()).save_pretrained(path)


def fmt(value, spec=".3g") -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[tuple[str, str]], results: dict, trees: list[str], title: str, lines: list[str]):
    """rows: (label, "job|key|format"); results[tree][job] is a dict of numbers."""
    lines += [f"### {title}", ""]
    if len(trees) == 2:
        lines += ["| | before | after | after / before |", "|---|---|---|---|"]
    else:
        lines += ["| | value |", "|---|---|"]
    for label, ref in rows:
        job, key, spec = ref.split("|")
        values = [results[tree].get(job, {}).get(key) for tree in trees]
        cells = [fmt(v, spec) for v in values]
        if len(trees) == 2:
            ratio = values[1] / values[0] if None not in values and values[0] else None
            cells.append(fmt(ratio, ".2f") + "×" if ratio else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-src", default=None, help="a source tree (its `src/`) to compare against")
    parser.add_argument("--before-label", default="before", help="how the results file names the before tree")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="decoder steps of the tokenize/detokenize timing")
    parser.add_argument("--batch-sizes", default="1,8", help="batch sizes of the tokenize/detokenize timing")
    parser.add_argument("--skip", default="", help="comma-separated jobs to skip: trunk, pipeline, load")
    parser.add_argument("--output", default=str(RESULTS / "throughput.md"))
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child(json.loads(args._child))
        return

    trees = ["before", "after"] if args.before_src else ["after"]
    sources = {"before": args.before_src, "after": None}
    skip = set(filter(None, args.skip.split(",")))
    batches = [int(b) for b in args.batch_sizes.split(",")]
    jobs = []
    for dtype in ("fp32", "bf16"):
        if "trunk" not in skip:
            jobs.append((f"trunk_{dtype}", dict(job="trunk", dtype_name=dtype, repeats=args.repeats)))
        if "pipeline" not in skip:
            spec = dict(job="pipeline", dtype_name=dtype, repeats=max(1, args.repeats - 1), steps=args.steps)
            jobs.append((f"pipeline_{dtype}", dict(spec, batches=batches)))
    if "pipeline" not in skip:  # the opt-in bf16 VAE on top of the bf16 trunk
        spec = dict(job="pipeline", dtype_name="bf16", repeats=max(1, args.repeats - 1), steps=args.steps)
        jobs.append(("pipeline_bf16_vae", dict(spec, batches=batches[:1], vae_dtype="bfloat16")))
    results = {tree: {} for tree in trees}
    with tempfile.TemporaryDirectory() as tmp:
        if "load" not in skip:
            save_d12(tmp)
            for dtype in ("fp32", "bf16"):
                jobs.append((f"load_{dtype}", dict(job="load", dtype_name=dtype, path=tmp)))
        from tqdm.auto import tqdm

        for name, spec in tqdm(jobs, desc="benchmark jobs"):
            for tree in trees:  # interleaved: before and after of one job run back to back
                results[tree][name] = run_child(dict(spec), sources[tree])

    lines = [
        "# Throughput of the d12-d12 tokenizer (random weights)",
        "",
        f"`python examples/benchmarks/bench_throughput.py{' --before-src …' if args.before_src else ''}`; "
        f"{results[trees[-1]].get('trunk_fp32', {}).get('threads', '?')} threads; "
        f"each job in its own process{', before and after interleaved' if len(trees) == 2 else ''}. "
        f"Before = {args.before_label}. Ratios are the claims; absolute times vary with the machine's load.",
        "",
    ]
    trunk_rows = []
    for dtype in ("fp32", "bf16"):
        trunk_rows += [
            (f"{dtype}: `torch.mm` peak GFLOP/s", f"trunk_{dtype}|mm_peak_gflops|.0f"),
            *[(f"{dtype}: trunk B={b} GFLOP/s", f"trunk_{dtype}|trunk_gflops_b{b}|.0f") for b in (1, 8)],
            *[(f"{dtype}: **trunk B={b} / mm peak**", f"trunk_{dtype}|trunk_peak_fraction_b{b}|.1%") for b in (1, 8)],
            (f"{dtype}: B=8 block linears (`aten::mm`) / mm peak", f"trunk_{dtype}|linear_peak_fraction_b8|.1%"),
            (f"{dtype}: B=8 attention kernel / mm peak", f"trunk_{dtype}|attention_peak_fraction_b8|.1%"),
            (f"{dtype}: B=8 ceiling (all else free) / mm peak", f"trunk_{dtype}|ceiling_peak_fraction_b8|.1%"),
            (f"{dtype}: B=8 time outside mm + attention", f"trunk_{dtype}|elementwise_share_b8|.1%"),
            (f"{dtype}: seconds per CFG step, B=1", f"trunk_{dtype}|cfg_step_s_b1|.3f"),
            (f"{dtype}: trunk forward B=8, s", f"trunk_{dtype}|trunk_s_b8|.3f"),
        ]
    table(trunk_rows, results, trees, "Decoder trunk against the matmul peak", lines)
    pipeline_rows = []
    for dtype in ("fp32", "bf16"):
        for b in batches:
            pipeline_rows += [
                (f"{dtype}: tokenize img/s, B={b}", f"pipeline_{dtype}|tokenize_img_s_b{b}|.3g"),
                (
                    f"{dtype}: detokenize img/s, B={b} ({args.steps} steps, CFG)",
                    f"pipeline_{dtype}|detokenize_img_s_b{b}|.3g",
                ),
                (f"{dtype}: VAE decode s, B={b}", f"pipeline_{dtype}|vae_decode_s_b{b}|.3f"),
                (f"{dtype}: VAE share of a {args.steps}-step call, B={b}", f"pipeline_{dtype}|vae_share_b{b}|.0%"),
                (f"{dtype}: VAE share of a 20-step call, B={b}", f"pipeline_{dtype}|vae_share_20_steps_b{b}|.0%"),
                (f"{dtype}: tokenize call peak MB, B={b}", f"pipeline_{dtype}|tokenize_peak_mb_b{b}|.0f"),
                (f"{dtype}: detokenize call peak MB, B={b}", f"pipeline_{dtype}|detokenize_peak_mb_b{b}|.0f"),
            ]
    b = batches[0]
    pipeline_rows += [
        (f"bf16 + bf16 VAE: tokenize img/s, B={b}", f"pipeline_bf16_vae|tokenize_img_s_b{b}|.3g"),
        (f"bf16 + bf16 VAE: detokenize img/s, B={b}", f"pipeline_bf16_vae|detokenize_img_s_b{b}|.3g"),
        (f"bf16 + bf16 VAE: VAE decode s, B={b}", f"pipeline_bf16_vae|vae_decode_s_b{b}|.3f"),
        (f"bf16 + bf16 VAE: VAE share of a {args.steps}-step call, B={b}", f"pipeline_bf16_vae|vae_share_b{b}|.0%"),
    ]
    title = "Tokenize / detokenize (the trunk in the dtype named; the VAE in fp32 unless named)"
    table(pipeline_rows, results, trees, title, lines)
    load_rows = []
    for dtype in ("fp32", "bf16"):
        load_rows += [
            (f"from_pretrained {dtype}: peak MB above the imports", f"load_{dtype}|load_peak_mb|.0f"),
            (f"from_pretrained {dtype}: resident MB after", f"load_{dtype}|load_rss_mb|.0f"),
            (f"{dtype} weights MB", f"load_{dtype}|weights_mb|.0f"),
        ]
    table(load_rows, results, trees, "Loading (safetensors written by save_pretrained, fp32)", lines)
    for tree in trees:
        for dtype in ("fp32", "bf16"):
            profile = results[tree].get(f"trunk_{dtype}", {}).get("profile_b8")
            if not profile:
                continue
            lines += [f"### torch.profiler top-10, trunk B=8 {dtype} ({tree})", "", "| op | calls | self ms | share |"]
            lines += ["|---|---|---|---|"] + [f"| `{k}` | {c} | {ms:.1f} | {s:.1%} |" for k, c, ms, s in profile]
            lines.append("")
    text = "\n".join(lines)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    Path(args.output).with_suffix(".json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
