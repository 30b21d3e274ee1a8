"""Adaptive token budgets (`num_tokens="auto"`) on held-out real images: does the budget FlexTok needs follow image
complexity, and what does `auto` cost?

    python examples/benchmarks/adaptive_budget.py                      # the shipped tokenizer, ~160 images
    python examples/benchmarks/adaptive_budget.py --model path/to/pipeline --per-dataset 100

1. Images: the first `--per-dataset` rows of the *test* splits of MNIST, Animal-MNIST and emoji (skipped when the emoji
   font is not installed), plus the 11 skimage photos (resized by the image processor). Complexity of each image as the
   tokenizer sees it (after resizing to the model's size): PNG-compressed size (bits per pixel, zlib level 9) and edge
   density (share of pixels whose Sobel gradient magnitude of the gray image exceeds 0.25).
2. Every candidate budget (1, 2, 4, ..., K) of every image is decoded at full steps from that image's noise
   (`sample_seed(seed, i)`), so the exact auto budget for any PSNR target is read off these decodes: the smallest
   budget reaching the target, K when none does. Spearman's rho (scipy) between that budget and each complexity
   measure, with its p-value, for the headline target and for a list of fixed targets.
3. The bars, measured in this run on one batch: `pipe(batch, num_tokens="auto")` with its defaults (search at
   `max(1, steps // 10)` steps, then full-step verification) against `pipe(batch, num_tokens=K)` (one full-budget
   decode of the same batch); how often `auto` meets the target where some budget <= K can; how often its budget
   equals the exact one.

The headline target defaults to the median PSNR at K over the images (rounded down to 0.5 dB), so that about half the
images can reach it whatever the model's quality: the script runs unchanged on a retrained model. Writes
`adaptive_budget.{json,md,png}` to `--output-dir` (default `examples/benchmarks/results`). Times are measured, never
asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import time

import numpy as np
import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FIXED_TARGETS = (10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 24.0)
EDGE_THRESHOLD = 0.25


def held_out_images(per_dataset: int) -> tuple[list, list[str], list[str]]:
    """(PIL images, dataset name per image, skipped datasets with the reason)."""
    from flextok_hf.data import load_image_dataset

    images, sources, skipped = [], [], []
    for name, count in (
        ("mnist", per_dataset),
        ("animal_mnist", per_dataset),
        ("emoji", per_dataset),
        ("skimage", None),
    ):
        try:
            dataset = load_image_dataset(name, "test")
        except (ImportError, OSError, ValueError) as error:  # e.g. no emoji font installed
            skipped.append(f"{name}: {type(error).__name__}: {error}")
            continue
        rows = dataset.select(range(min(count or len(dataset), len(dataset))))
        images += [image.convert("RGB") for image in rows["image"]]
        sources += [name] * len(rows)
    return images, sources, skipped


def complexity(pixel_values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Processed images `[N, 3, S, S]` in [-1, 1] -> (PNG bits per pixel `[N]`, edge density `[N]`)."""
    import PIL.Image
    from scipy import ndimage

    arrays = ((pixel_values.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    png_bpp, edges = [], []
    for array in arrays:
        buffer = io.BytesIO()
        PIL.Image.fromarray(array).save(buffer, format="PNG", optimize=True, compress_level=9)
        png_bpp.append(8 * buffer.tell() / (array.shape[0] * array.shape[1]))
        gray = array.astype(np.float64).mean(axis=2) / 255.0
        magnitude = np.hypot(ndimage.sobel(gray, axis=0), ndimage.sobel(gray, axis=1)) / 4.0  # Sobel gain is 4
        edges.append(float((magnitude > EDGE_THRESHOLD).mean()))
    return np.asarray(png_bpp), np.asarray(edges)


@torch.no_grad()
def every_budget_psnr(pipe, images, budgets, seed: int, batch_size: int) -> np.ndarray:
    """PSNR `[N, J]` of every budget of every image at full steps, from image i's noise `sample_seed(seed, i)`."""
    from tqdm.auto import tqdm

    from flextok_hf.evaluation import sample_seed
    from flextok_hf.metrics.functional import psnr

    rows = []
    for start in tqdm(range(0, len(images), batch_size), desc="Decoding every budget"):
        batch = images[start : start + batch_size]
        generators = [torch.Generator().manual_seed(sample_seed(seed, start + i)) for i in range(len(batch))]
        out = pipe.coarse_to_fine(batch, budgets=budgets, generator=generators, output_type="raw")
        reference = pipe.preprocess(batch).float()
        n, j = out.images.shape[:2]
        predicted = out.images.reshape(n * j, *out.images.shape[2:]).clamp(-1, 1)
        rows.append(psnr(predicted, reference.repeat_interleave(j, 0), data_range=2.0).reshape(n, j).numpy())
    return np.concatenate(rows)


def exact_budgets(quality: np.ndarray, budgets: list[int], target: float) -> tuple[np.ndarray, np.ndarray]:
    """The smallest budget reaching `target` per image (K when none does), and whether one does."""
    from flextok_hf.adaptive_budget import smallest_sufficient

    index, met = smallest_sufficient(torch.from_numpy(quality), target, "psnr")
    return np.asarray(budgets)[index.numpy()], met.numpy()


def spearman(x, y) -> dict:
    from scipy.stats import spearmanr

    x, y = np.asarray(x), np.asarray(y)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None}
    result = spearmanr(x, y)
    return {"rho": float(result.statistic), "p": float(result.pvalue)}


def cost_benchmark(pipe, images, indices: list[int], target: float, seed: int, repeats: int) -> dict:
    """Wall time of auto (defaults) vs one full-budget decode of the same batch (best of `repeats`), and auto's
    budgets/qualities. Image j has the noise of image `indices[j]` in the exhaustive decode."""
    from flextok_hf.evaluation import sample_seed

    num_registers = pipe.flextok.config.num_registers

    def generators():
        return [torch.Generator().manual_seed(sample_seed(seed, i)) for i in indices]

    def timed(call):
        best, result = math.inf, None
        for _ in range(repeats):
            start = time.perf_counter()
            result = call()
            best = min(best, time.perf_counter() - start)
        return best, result

    full_time, _ = timed(lambda: pipe(images, num_tokens=num_registers, generator=generators(), output_type="pt"))
    auto_time, auto = timed(
        lambda: pipe(images, num_tokens="auto", quality_target=target, generator=generators(), output_type="pt")
    )
    steps = pipe.config.num_inference_steps
    return {
        "batch_size": len(images),
        "full_budget_seconds": full_time,
        "auto_seconds": auto_time,
        "auto_over_full": auto_time / full_time,
        "num_inference_steps": steps,
        "search_num_inference_steps": max(1, steps // 10),
        "auto_num_tokens": auto.num_tokens,
        "auto_quality": auto.quality,
        "auto_target_met": auto.target_met,
    }


def write_plot(path: str, results: dict, png_bpp, edges, budgets_per_image, sources) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    jitter = np.exp2(rng.uniform(-0.15, 0.15, len(budgets_per_image)))  # budgets are powers of two: spread a little
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    headline = results["headline"]
    for axis, values, name, key in (
        (axes[0], png_bpp, "PNG size (bits per pixel)", "png_bits_per_pixel"),
        (axes[1], edges, f"edge density (Sobel > {EDGE_THRESHOLD})", "edge_density"),
    ):
        for source in sorted(set(sources)):
            mask = np.asarray(sources) == source
            axis.scatter(values[mask], (budgets_per_image * jitter)[mask], s=14, alpha=0.7, label=source)
        axis.set_yscale("log", base=2)
        axis.set_xlabel(name)
        axis.set_ylabel("auto budget (tokens)")
        stats = headline["spearman"][key]
        rho = "n/a" if stats["rho"] is None else f"{stats['rho']:.2f} (p={stats['p']:.1e})"
        axis.set_title(f"Spearman rho = {rho}")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Smallest budget reaching {headline['target_psnr']:g} dB PSNR vs image complexity")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def format_markdown(results: dict) -> str:
    head, cost = results["headline"], results["cost"]

    def fmt(stats):
        return "n/a (constant)" if stats["rho"] is None else f"{stats['rho']:+.3f} (p = {stats['p']:.2g})"

    lines = [
        "# Adaptive token budgets vs image complexity",
        "",
        f"Model: `{results['model']}` (K = {results['num_registers']}); {results['num_images']} held-out images "
        f"({', '.join(f'{n} {s}' for s, n in results['images_per_dataset'].items())}); decoder "
        f"{results['num_inference_steps']} steps, guidance {results['guidance_scale']}; seed {results['seed']}. "
        f"Machine: {results['machine']}.",
        "",
        results["note"],
        "",
        "## The claim: complex images need more tokens",
        "",
        f"Headline target: {head['target_psnr']:g} dB ({head['target_rule']}). {head['reachable']}/"
        f"{results['num_images']} images can reach it within K; mean auto budget {head['mean_budget']:.2f}.",
        "",
        "| complexity measure | Spearman rho (all images) | rho (images that reach the target) |",
        "|---|---|---|",
        f"| PNG size (bits/pixel) | {fmt(head['spearman']['png_bits_per_pixel'])} | "
        f"{fmt(head['spearman_reachable']['png_bits_per_pixel'])} |",
        f"| edge density | {fmt(head['spearman']['edge_density'])} | "
        f"{fmt(head['spearman_reachable']['edge_density'])} |",
        "",
        "![scatter](adaptive_budget.png)",
        "",
        "Per dataset at the headline target. The rho columns rank images *within* one dataset, so they measure "
        "complexity without the change of domain between datasets (which the all-images rho mixes in):",
        "",
        "| dataset | images | mean PNG bits/pixel | mean edge density | mean budget | reach the target "
        "| rho vs PNG size | rho vs edge density |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source, row in head["per_dataset"].items():
        lines.append(
            f"| {source} | {row['images']} | {row['png_bits_per_pixel']:.2f} | {row['edge_density']:.3f} | "
            f"{row['mean_budget']:.2f} | {row['reachable']}/{row['images']} | {fmt(row['spearman_png'])} | "
            f"{fmt(row['spearman_edges'])} |"
        )
    lines += [
        "",
        "Fixed targets (exact auto budgets from the full-step decodes of every budget):",
        "",
        "| target (dB) | reach it | mean budget | rho vs PNG size | rho vs edge density |",
        "|---|---|---|---|---|",
    ]
    for row in results["fixed_targets"]:
        lines.append(
            f"| {row['target_psnr']:g} | {row['reachable']}/{results['num_images']} | {row['mean_budget']:.2f} | "
            f"{fmt(row['spearman']['png_bits_per_pixel'])} | {fmt(row['spearman']['edge_density'])} |"
        )
    lines += [
        "",
        "## The bars (one batch, one run)",
        "",
        f"Batch of {cost['batch_size']} images, headline target {head['target_psnr']:g} dB, `auto` with its defaults "
        f"(a bisection over the {len(results['budgets'])} candidates at {cost['search_num_inference_steps']} Euler "
        "steps, one mixed-budget batch per round, then full-step verification; before the bisection, decoding every "
        "candidate in the search cost 2.01x):",
        "",
        "| | value | bar |",
        "|---|---|---|",
        f"| wall time, one full-budget decode (`num_tokens=K`) | {cost['full_budget_seconds']:.2f} s | |",
        f'| wall time, `num_tokens="auto"` | {cost["auto_seconds"]:.2f} s | |',
        f"| auto / full-budget decode | **{cost['auto_over_full']:.2f}x** | <= 2x |",
        f"| auto meets the target where a budget <= K can | **{cost['met_where_reachable']}** | >= 95 % |",
        f"| auto budget = exact smallest sufficient budget | {cost['agreement']} | |",
        f"| auto budget >= exact budget | {cost['not_below_exact']} | |",
        "",
        f"Generated by `python examples/benchmarks/adaptive_budget.py` in {results['seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def summarize(values_budget, met, png_bpp, edges, sources) -> dict:
    reachable = met.astype(bool)
    per_dataset = {}
    for source in dict.fromkeys(sources):
        mask = np.asarray(sources) == source
        per_dataset[source] = {
            "images": int(mask.sum()),
            "png_bits_per_pixel": float(png_bpp[mask].mean()),
            "edge_density": float(edges[mask].mean()),
            "mean_budget": float(values_budget[mask].mean()),
            "reachable": int(reachable[mask].sum()),
            "spearman_png": spearman(png_bpp[mask], values_budget[mask]),
            "spearman_edges": spearman(edges[mask], values_budget[mask]),
        }
    return {
        "reachable": int(reachable.sum()),
        "mean_budget": float(values_budget.mean()),
        "spearman": {
            "png_bits_per_pixel": spearman(png_bpp, values_budget),
            "edge_density": spearman(edges, values_budget),
        },
        "spearman_reachable": {
            "png_bits_per_pixel": spearman(png_bpp[reachable], values_budget[reachable]),
            "edge_density": spearman(edges[reachable], values_budget[reachable]),
        },
        "per_dataset": per_dataset,
    }


def analyze(quality, budgets, png_bpp, edges, sources, target_psnr: float | None):
    """-> (headline summary, fixed-target summaries, exact auto budget per image at the headline target)."""
    if target_psnr is None:
        target, rule = math.floor(float(np.median(quality[:, -1])) * 2) / 2, "median PSNR at K, rounded down to 0.5 dB"
    else:
        target, rule = target_psnr, "given with --target-psnr"
    auto_budgets, met = exact_budgets(quality, budgets, target)
    headline = {"target_psnr": target, "target_rule": rule, **summarize(auto_budgets, met, png_bpp, edges, sources)}
    fixed = []
    for fixed_target in FIXED_TARGETS:
        values, reachable = exact_budgets(quality, budgets, fixed_target)
        summary = summarize(values, reachable, png_bpp, edges, sources)
        fixed.append(
            {"target_psnr": fixed_target, **{k: summary[k] for k in ("reachable", "mean_budget", "spearman")}}
        )
    return headline, fixed, auto_budgets


def report_only(output_dir: str, target_psnr: float | None) -> None:
    """Re-analyses a previous run's `adaptive_budget.json` (no decoding) and rewrites the report."""
    with open(os.path.join(output_dir, "adaptive_budget.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    per_image = results["per_image"]
    quality = np.asarray(per_image["psnr_per_budget"], dtype=np.float32)
    png_bpp, edges = np.asarray(per_image["png_bits_per_pixel"]), np.asarray(per_image["edge_density"])
    headline, fixed, auto_budgets = analyze(
        quality, results["budgets"], png_bpp, edges, per_image["dataset"], target_psnr
    )
    results.update(headline=headline, fixed_targets=fixed)
    write_report(results, auto_budgets, output_dir)


def weights_note(model: str) -> str:
    """Which weights were measured: the safetensors file's SHA-256 prefix and date."""
    import hashlib

    for name in ("flextok/model.safetensors", "model.safetensors"):
        path = os.path.join(model, name)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()[:12]
            return f"Weights: `{name}` sha256 {digest}…, measured {time.strftime('%Y-%m-%d')}."
    return f"Measured {time.strftime('%Y-%m-%d')}."


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="FlexTokPipeline folder or Hub id (default: the shipped one)")
    parser.add_argument("--per-dataset", type=int, default=48, help="test images per dataset (default 48)")
    parser.add_argument("--target-psnr", type=float, default=None, help="headline target (default: median at K)")
    parser.add_argument("--cost-batch-size", type=int, default=32, help="batch of the cost benchmark (default 32)")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats, best kept (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per exhaustive decode batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=RESULTS_DIR)
    parser.add_argument("--note", default=None, help="a sentence for the report (e.g. which weights were measured)")
    parser.add_argument(
        "--report-only", action="store_true", help="re-analyse --output-dir/adaptive_budget.json without decoding"
    )
    args = parser.parse_args()
    if args.report_only:
        return report_only(args.output_dir, args.target_psnr)

    from flextok_hf.adaptive_budget import candidate_budgets
    from flextok_hf.pipeline_flextok import FlexTokPipeline
    from flextok_hf.pretrained import pretrained_path

    started = time.perf_counter()
    model = args.model or pretrained_path("tokenizer")
    pipe = FlexTokPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    num_registers = pipe.flextok.config.num_registers
    budgets = candidate_budgets(num_registers)

    images, sources, skipped = held_out_images(args.per_dataset)
    png_bpp, edges = complexity(pipe.preprocess(images).cpu())
    quality = every_budget_psnr(pipe, images, budgets, args.seed, args.batch_size)

    headline, fixed, auto_budgets = analyze(quality, budgets, png_bpp, edges, sources, args.target_psnr)
    target = headline["target_psnr"]

    # the bars: a batch mixing the datasets (every k-th image)
    step = max(1, len(images) // args.cost_batch_size)
    picked = list(range(0, len(images), step))[: args.cost_batch_size]
    cost = cost_benchmark(pipe, [images[i] for i in picked], picked, target, args.seed, args.repeats)
    exact_picked, reachable_picked = exact_budgets(quality[picked], budgets, target)  # same noise per image
    auto_picked = np.asarray(cost["auto_num_tokens"])
    met_auto = np.asarray(cost["auto_target_met"])
    cost["met_where_reachable"] = f"{int(met_auto[reachable_picked].sum())}/{int(reachable_picked.sum())}"
    cost["agreement"] = f"{int((auto_picked == exact_picked).sum())}/{len(picked)}"
    cost["not_below_exact"] = f"{int((auto_picked >= exact_picked).sum())}/{len(picked)}"

    results = {
        "model": os.path.relpath(model) if os.path.isdir(model) else model,
        "num_registers": num_registers,
        "budgets": budgets,
        "num_inference_steps": pipe.config.num_inference_steps,
        "guidance_scale": pipe.config.guidance_scale,
        "seed": args.seed,
        "num_images": len(images),
        "images_per_dataset": {source: sources.count(source) for source in dict.fromkeys(sources)},
        "skipped_datasets": skipped,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "note": " ".join(filter(None, [args.note, weights_note(model)])),
        "headline": headline,
        "fixed_targets": fixed,
        "cost": cost,
        "per_image": {
            "dataset": sources,
            "png_bits_per_pixel": png_bpp.round(4).tolist(),
            "edge_density": edges.round(4).tolist(),
            "psnr_per_budget": quality.round(6).tolist(),
        },
    }
    results["seconds"] = time.perf_counter() - started
    write_report(results, auto_budgets, args.output_dir)


def write_report(results: dict, auto_budgets, output_dir: str) -> None:
    per_image = results["per_image"]
    png_bpp, edges = np.asarray(per_image["png_bits_per_pixel"]), np.asarray(per_image["edge_density"])
    sources = per_image["dataset"]
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "adaptive_budget.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    write_plot(os.path.join(output_dir, "adaptive_budget.png"), results, png_bpp, edges, auto_budgets, sources)
    markdown = format_markdown(results)
    with open(os.path.join(output_dir, "adaptive_budget.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
