"""Which decoder sampling settings should a tokenizer store? PSNR and class agreement per guidance setting.

Evaluates a FlexTok model (or pipeline folder) on the first held-out test images of MNIST and Animal-MNIST for each
setting (guidance scale, CFG or APG) with 20 Euler steps, at a few budgets, and writes a markdown table. These are
held-out images from the *start* of the test split; the final reports use a different (larger) slice only in the sense
that they include these, so pick settings on few images and report on many.

    python examples/benchmarks/decoder_settings.py --model runs/tokenizer --num-samples 48 \
        --output examples/benchmarks/results/decoder_settings.md
"""

from __future__ import annotations

import argparse
import json

SETTINGS = (("CFG", 1.0), ("CFG", 1.5), ("CFG", 2.0), ("CFG", 3.0), ("APG", 3.0))


def main():
    from flextok_hf import FlexTokPipeline
    from flextok_hf.data import load_image_dataset
    from flextok_hf.evaluation import evaluate_rate_distortion

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="FlexTok model or pipeline folder")
    parser.add_argument("--num-samples", type=int, default=48, help="test images per dataset (default 48)")
    parser.add_argument("--budgets", default="1,4,32")
    parser.add_argument("--output", required=True, help="markdown file to write")
    args = parser.parse_args()
    budgets = [int(k) for k in args.budgets.split(",")]
    model = FlexTokPipeline.from_pretrained(args.model).flextok.eval()
    datasets = {name: load_image_dataset(name, "test") for name in ("mnist", "animal_mnist")}
    rows = []
    for mode, scale in SETTINGS:
        row = {"mode": mode, "guidance_scale": scale}
        for name, dataset in datasets.items():
            report = evaluate_rate_distortion(
                model,
                dataset,
                budgets=budgets,
                num_samples=args.num_samples,
                seeds=[0],
                guidance_scale=scale,
                adaptive_guidance=mode == "APG",
                progress_bar=False,
            )
            row[name] = {r["budget"]: (r["psnr"], r["recon_accuracy"]) for r in report["per_budget"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        f"# Decoder settings of `{args.model}`",
        "",
        f"First {args.num_samples} test images of each set, decoder seed 0, 20 Euler steps. Cells: PSNR (dB) / share of",
        "reconstructions the shipped classifier puts in the original's class.",
        "",
        "| setting | " + " | ".join(f"{name} @{k}" for name in datasets for k in budgets) + " |",
        "|---|" + "---|" * (len(datasets) * len(budgets)),
    ]
    for row in rows:
        cells = [f"{row[name][k][0]:.2f} / {row[name][k][1]:.2f}" for name in datasets for k in budgets]
        lines.append(f"| {row['mode']} {row['guidance_scale']} | " + " | ".join(cells) + " |")
    with open(args.output, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print(args.output)


if __name__ == "__main__":
    main()
