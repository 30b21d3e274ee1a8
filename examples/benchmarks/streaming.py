"""What streaming costs: previews while the prior generates, and coarse-to-fine reconstructions budget by budget.

    python examples/benchmarks/streaming.py                       # the shipped text-to-image pipeline + tokenizer
    python examples/benchmarks/streaming.py --text2image path/to/pipeline --num-images 8

1. Generation: `pipe(prompts, generator=...)` against iterating `pipe(prompts, generator=..., stream=True)` to the
   end (previews at 1, 2, 4, ... < k tokens with the default preview settings: one unguided Euler step each, then the
   final images). Reports both wall times, their ratio (the bar: streaming adds <= 20 %), the time until the first
   preview, and whether the streamed final images equal the non-streamed ones bit for bit.
2. Reconstruction: `coarse_to_fine(images)` (all budgets in one batch) against `coarse_to_fine(images, stream=True)`
   (one batch per budget, each yielded when decoded): wall times, ratio, time until the first budget is shown, and the
   largest difference between the two (float rounding of the batch layout).

Runs are interleaved and the best of `--repeats` is kept. Times are measured here, never asserted. Writes
`streaming.{json,md}` to `--output-dir` (default `examples/benchmarks/results`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PROMPTS = ("handwritten digit seven", "a giraffe", "an elephant", "handwritten digit three")


def best_of(repeats: int, calls: dict) -> dict:
    """Interleaved timing: {name: (best seconds, result of the last call, seconds until the first item)}."""
    best = {name: (math.inf, None, math.inf) for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            result, first = call(start)
            elapsed = time.perf_counter() - start
            if elapsed < best[name][0]:
                best[name] = (elapsed, result, first)
    return best


def consume(stream, start: float):
    """Iterates a stream to the end -> (all items, seconds from `start` until the first item)."""
    items, first = [], math.inf
    for item in stream:
        first = min(first, time.perf_counter() - start)
        items.append(item)
    return items, first


@torch.no_grad()
def generation_benchmark(pipe, prompts, num_images: int, seed: int, repeats: int) -> dict:
    def plain(start):
        out = pipe(list(prompts), num_images_per_prompt=num_images, generator=torch.Generator().manual_seed(seed))
        return out, math.nan

    def streamed(start):
        stream = pipe(
            list(prompts), num_images_per_prompt=num_images, generator=torch.Generator().manual_seed(seed), stream=True
        )
        return consume(stream, start)

    timings = best_of(repeats, {"plain": plain, "stream": streamed})
    plain_time, plain_out, _ = timings["plain"]
    stream_time, steps, first = timings["stream"]
    final = steps[-1]
    same = all((a.tobytes() == b.tobytes()) for a, b in zip(plain_out.images, final.images)) and all(
        torch.equal(a, b) for a, b in zip(plain_out.token_ids, final.token_ids)
    )
    return {
        "images": len(final.images),
        "num_tokens": final.num_tokens,
        "preview_budgets": [step.num_tokens for step in steps[:-1]],
        "plain_seconds": plain_time,
        "stream_seconds": stream_time,
        "stream_over_plain": stream_time / plain_time,
        "seconds_to_first_preview": first,
        "final_equals_non_streamed": bool(same),
    }


@torch.no_grad()
def coarse_to_fine_benchmark(pipe, images, seed: int, repeats: int) -> dict:
    def batched(start):
        return pipe.coarse_to_fine(images, generator=torch.Generator().manual_seed(seed), output_type="pt"), math.nan

    def streamed(start):
        stream = pipe.coarse_to_fine(
            images, generator=torch.Generator().manual_seed(seed), output_type="pt", stream=True
        )
        return consume(stream, start)

    timings = best_of(repeats, {"batched": batched, "stream": streamed})
    batched_time, reference, _ = timings["batched"]
    stream_time, steps, first = timings["stream"]
    difference = max(float((step.images - reference.images[:, j]).abs().max()) for j, step in enumerate(steps))
    return {
        "images": len(images),
        "budgets": reference.budgets,
        "batched_seconds": batched_time,
        "stream_seconds": stream_time,
        "stream_over_batched": stream_time / batched_time,
        "seconds_to_first_budget": first,
        "max_abs_difference": difference,
    }


def format_markdown(results: dict) -> str:
    gen, c2f = results["generation"], results["coarse_to_fine"]
    return "\n".join(
        [
            "# Streaming overhead",
            "",
            f"Text-to-image: `{results['text2image']}`; tokenizer: `{results['tokenizer']}`. Decoder "
            f"{results['num_inference_steps']} steps. Best of {results['repeats']} interleaved runs. Machine: "
            f"{results['machine']}.",
            "",
            results["note"],
            "",
            f"## Previews while the prior generates ({gen['images']} images, k = {gen['num_tokens']})",
            "",
            f"Previews at {gen['preview_budgets']} tokens (one unguided Euler step each, from the final images' noise), "
            "then the final images.",
            "",
            "| | value | bar |",
            "|---|---|---|",
            f"| without previews | {gen['plain_seconds']:.2f} s | |",
            f"| with previews (`stream=True`, iterated to the end) | {gen['stream_seconds']:.2f} s | |",
            f"| streamed / plain | **{gen['stream_over_plain']:.3f}x** ({100 * (gen['stream_over_plain'] - 1):+.1f} %) "
            "| <= 1.20x |",
            f"| time until the first preview | {gen['seconds_to_first_preview']:.2f} s | |",
            f"| final images equal the non-streamed ones (same generator) | {gen['final_equals_non_streamed']} | |",
            "",
            f"## Coarse to fine, budget by budget ({c2f['images']} images, budgets {c2f['budgets']})",
            "",
            "| | value | bar |",
            "|---|---|---|",
            f"| all budgets in one batch | {c2f['batched_seconds']:.2f} s | |",
            f"| one batch per budget, streamed | {c2f['stream_seconds']:.2f} s | |",
            f"| streamed / batched | **{c2f['stream_over_batched']:.3f}x** "
            f"({100 * (c2f['stream_over_batched'] - 1):+.1f} %) | <= 1.20x |",
            f"| time until the first budget is shown | {c2f['seconds_to_first_budget']:.2f} s | |",
            f"| largest difference to the batched images | {c2f['max_abs_difference']:.1e} | |",
            "",
            f"Generated by `python examples/benchmarks/streaming.py` in {results['seconds']:.0f} s.",
            "",
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text2image", default=None, help="generation pipeline (default: the shipped one)")
    parser.add_argument("--tokenizer", default=None, help="FlexTokPipeline (default: the shipped one)")
    parser.add_argument("--num-images", type=int, default=2, help="images per prompt (default 2; 4 prompts)")
    parser.add_argument("--reconstruct-images", type=int, default=8, help="images for coarse to fine (default 8)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=RESULTS_DIR)
    parser.add_argument("--note", default=None, help="a sentence for the report (e.g. which weights were measured)")
    args = parser.parse_args()

    from flextok_hf.data import load_image_dataset
    from flextok_hf.pipeline_flextok import FlexTokPipeline
    from flextok_hf.pipeline_flextok_text2image import load_generation_pipeline
    from flextok_hf.pretrained import pretrained_path

    started = time.perf_counter()
    text2image = args.text2image or pretrained_path("text2image")
    tokenizer = args.tokenizer or pretrained_path("tokenizer")
    generation_pipe = load_generation_pipeline(text2image)
    tokenizer_pipe = FlexTokPipeline.from_pretrained(tokenizer)
    for pipe in (generation_pipe, tokenizer_pipe):
        pipe.set_progress_bar_config(disable=True)
    half = args.reconstruct_images // 2
    images = [
        image.convert("RGB")
        for name, count in (("mnist", half), ("animal_mnist", args.reconstruct_images - half))
        for image in load_image_dataset(name, "test").select(range(count))["image"]
    ]
    results = {
        "text2image": os.path.relpath(text2image) if os.path.isdir(text2image) else text2image,
        "tokenizer": os.path.relpath(tokenizer) if os.path.isdir(tokenizer) else tokenizer,
        "num_inference_steps": generation_pipe.config.num_inference_steps,
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "note": " ".join(filter(None, [args.note, f"Measured {time.strftime('%Y-%m-%d')}."])),
        "generation": generation_benchmark(generation_pipe, PROMPTS, args.num_images, args.seed, args.repeats),
        "coarse_to_fine": coarse_to_fine_benchmark(tokenizer_pipe, images, args.seed, args.repeats),
    }
    results["seconds"] = time.perf_counter() - started
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "streaming.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    markdown = format_markdown(results)
    with open(os.path.join(args.output_dir, "streaming.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
