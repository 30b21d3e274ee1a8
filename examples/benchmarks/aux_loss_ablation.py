"""Does the auxiliary x0 loss help small pixel-space FlexTok decoders? An ablation of `x0_loss_weight`.

    OMP_NUM_THREADS=1 python examples/benchmarks/aux_loss_ablation.py --output_dir runs/aux_loss_ablation \
        --x0_loss_weights 0 --seeds 0
    OMP_NUM_THREADS=1 python examples/benchmarks/aux_loss_ablation.py --output_dir runs/aux_loss_ablation \
        --x0_loss_weights 1 --seeds 0
    python examples/benchmarks/aux_loss_ablation.py --output_dir runs/aux_loss_ablation --report_only

Every run trains the same small model (`--preset`, default a 32x32 pixel-space model) on MNIST for `--max_steps` steps
with the same seed, data order and draws; only `x0_loss_weight` differs (the loss is `rf + w * x0`, with
`x0 = MSE(x_t - sigma * v, x0)`). At `--num_checkpoints` evenly spaced steps it measures, with the EMA weights, on the
first `--num_eval_images` MNIST test images:

- `rf_loss@K` / `rf_loss@1` / `rf_loss@null`: the rectified-flow MSE with all K registers / only the first one / the
  null condition (no token: the unconditional model), with fixed noise and sigmas (the same draws for every run and
  checkpoint), so the RF losses of both settings are comparable; `rf_loss@null - rf_loss@K` is what the tokens buy;
- `psnr@k` for k in `--budgets` (default 1, 4 and K): reconstructions from the first k tokens (10 Euler steps, no
  guidance, fixed noise per image).

Each run writes `<output_dir>/run-w<weight>-s<seed>.json`; the report (`--report_only`, or after the runs) prints a
markdown table, and writes `results.json` and `results.png` (PSNR@K, PSNR@1 and RF loss against the step).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np
import torch
from transformers import TrainerCallback, set_seed

PRESETS = {
    # 32x32 pixel space, patch 4 -> 64 patches, 16 registers, width 64, 2 + 3 blocks: 0.44 M parameters.
    "small_32px": dict(
        image_size=32,
        vae_config=None,
        patch_size=4,
        encoder_hidden_size=64,
        encoder_num_layers=2,
        encoder_head_dim=32,
        decoder_hidden_size=64,
        decoder_num_layers=3,
        decoder_head_dim=32,
        num_registers=16,
        fsq_levels=[8, 5, 5, 5],
        nested_dropout_mode="pow2",
        null_condition_dropout_prob=0.1,
    ),
    # 16x16 pixel space (MNIST downscaled), patch 4 -> 16 patches, 8 registers, width 64, 2 + 2 blocks: 0.34 M.
    "tiny_16px": dict(
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
        fsq_levels=[8, 5, 5, 5],
        nested_dropout_mode="pow2",
        null_condition_dropout_prob=0.1,
    ),
}


@torch.no_grad()
def checkpoint_metrics(model, images: torch.Tensor, budgets, num_inference_steps: int, seed: int) -> dict:
    """RF losses with fixed draws and PSNR per budget of `images` `[N, 3, S, S]`; the model is put in eval mode."""
    from flextok_hf.metrics.functional import psnr

    was_training = model.training
    model.eval()
    try:
        config = model.config
        images = images.to(model.device)
        batch = images.shape[0]
        generator = torch.Generator().manual_seed(seed)
        shape = (batch, config.latent_channels, config.latent_size, config.latent_size)
        noise = torch.randn(shape, generator=generator)
        sigmas = torch.sigmoid(torch.randn(batch, generator=generator))
        metrics = {}
        for name, k in (("K", config.num_registers), ("1", 1), ("null", 1)):
            keep_k = torch.full((batch,), k, dtype=torch.long)
            null = torch.full((batch,), name == "null", dtype=torch.bool)
            output = model(pixel_values=images, noise=noise, sigmas=sigmas, keep_k=keep_k, null_condition_mask=null)
            metrics[f"rf_loss@{name}"] = output.rf_loss.item()
        token_ids = model.encode(pixel_values=images).token_ids
        start = torch.randn(shape, generator=generator)
        sequences = [token_ids[i, :k] for k in budgets for i in range(batch)]
        decoded = model.detokenize(
            sequences,
            num_inference_steps=num_inference_steps,
            guidance_scale=1.0,
            latents=start.repeat(len(budgets), 1, 1, 1),
            progress_bar=False,
        ).clamp(-1, 1)
        for k, reconstruction in zip(budgets, decoded.split(batch)):
            metrics[f"psnr@{k}"] = psnr(reconstruction, images, reduction="mean").item()
    finally:
        model.train(was_training)
    return metrics


class CheckpointMetricsCallback(TrainerCallback):
    """Runs `checkpoint_metrics` (with the EMA weights) at the given steps and prints each row."""

    def __init__(self, images, budgets, steps, num_inference_steps, seed, ema):
        self.images, self.budgets, self.steps = images, budgets, set(steps)
        self.num_inference_steps, self.seed, self.ema = num_inference_steps, seed, ema
        self.rows: list[dict] = []
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step not in self.steps:
            return
        with self.ema.average_parameters(model):
            row = checkpoint_metrics(model, self.images, self.budgets, self.num_inference_steps, self.seed)
        train_losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
        row = {"step": state.global_step, "train_loss": train_losses[-1] if train_losses else None, **row}
        row["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def run_one(args, x0_loss_weight: float, seed: int) -> dict:
    from flextok_hf import FlexTokConfig, FlexTokModel
    from flextok_hf.data import load_image_dataset
    from flextok_hf.image_processing_flextok import FlexTokImageProcessor
    from flextok_hf.modeling_flextok import count_parameters
    from flextok_hf.training import EMACallback, ImageCollator
    from flextok_hf.training.tokenizer import FlexTokTrainer, TokenizerTrainingArguments

    set_seed(seed)
    config = FlexTokConfig(**{**PRESETS[args.preset], "x0_loss_weight": float(x0_loss_weight)})
    model = FlexTokModel(config)
    processor = FlexTokImageProcessor.from_model_config(config)
    train = load_image_dataset(args.dataset, "train")
    test = load_image_dataset(args.dataset, "test").select(range(args.num_eval_images))
    images = ImageCollator(processor)([test[i] for i in range(len(test))])["pixel_values"]
    budgets = sorted({min(int(k), config.num_registers) for k in args.budgets.split(",")} | {config.num_registers})
    steps = [round(args.max_steps * (i + 1) / args.num_checkpoints) for i in range(args.num_checkpoints)]
    run_dir = os.path.join(args.output_dir, f"trainer-w{x0_loss_weight:g}-s{seed}")
    training_args = TokenizerTrainingArguments(
        output_dir=run_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=min(100, args.max_steps // 10),
        lr_scheduler_type="cosine",
        logging_steps=25,
        eval_strategy="no",
        save_strategy="no",
        seed=seed,
        data_seed=seed,
        ema_decay=args.ema_decay,
        disable_tqdm=True,
        dataloader_num_workers=0,
        report_to="none",
    )
    ema = EMACallback(args.ema_decay, save_final=False, swap_at_end=False)
    metrics = CheckpointMetricsCallback(images, budgets, steps, args.num_inference_steps, args.eval_seed, ema)
    trainer = FlexTokTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=ImageCollator(processor),
        callbacks=[ema, metrics],
    )
    print(
        f"x0_loss_weight={x0_loss_weight:g} seed={seed}: {count_parameters(model):,} parameters, "
        f"{args.max_steps} steps of batch {args.batch_size}, threads={torch.get_num_threads()}",
        flush=True,
    )
    start = time.perf_counter()
    trainer.train()
    result = {
        "x0_loss_weight": float(x0_loss_weight),
        "seed": seed,
        "preset": args.preset,
        "config": {k: v for k, v in config.to_dict().items() if k in PRESETS[args.preset] or k == "x0_loss_weight"},
        "parameters": count_parameters(model),
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "ema_decay": args.ema_decay,
        "num_eval_images": len(images),
        "num_inference_steps": args.num_inference_steps,
        "budgets": budgets,
        "train_seconds": round(time.perf_counter() - start, 1),
        "threads": torch.get_num_threads(),
        "checkpoints": metrics.rows,
    }
    path = os.path.join(args.output_dir, f"run-w{x0_loss_weight:g}-s{seed}.json")
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {path} ({result['train_seconds']} s)", flush=True)
    return result


def load_runs(output_dir: str) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(output_dir, "run-w*-s*.json"))):
        with open(path) as handle:
            runs.append(json.load(handle))
    return runs


def summarize(runs: list[dict]) -> dict:
    """Mean (and spread over seeds) of every checkpoint metric, per x0 weight and step."""
    summary: dict[str, dict] = {}
    for weight in sorted({run["x0_loss_weight"] for run in runs}):
        group = [run for run in runs if run["x0_loss_weight"] == weight]
        steps = sorted({row["step"] for run in group for row in run["checkpoints"]})
        rows = []
        for step in steps:
            entries = [row for run in group for row in run["checkpoints"] if row["step"] == step]
            keys = [key for key in entries[0] if key not in ("step", "elapsed_s") and entries[0][key] is not None]
            row = {"step": step, "num_seeds": len(entries)}
            for key in keys:
                values = np.array([entry[key] for entry in entries], dtype=np.float64)
                row[key] = float(values.mean())
                if len(values) > 1:
                    row[f"{key}_std"] = float(values.std(ddof=1))
            rows.append(row)
        summary[f"{weight:g}"] = rows
    return summary


def markdown_table(summary: dict) -> str:
    weights = list(summary)
    first = summary[weights[0]][0]
    psnr_keys = sorted((key for key in first if key.startswith("psnr@") and not key.endswith("_std")),
                       key=lambda key: int(key.split("@")[1]))  # fmt: skip
    keys = [key for key in ("rf_loss@K", "rf_loss@1", "rf_loss@null") if key in first] + psnr_keys
    lines = ["| step | x0 weight | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    steps = sorted({row["step"] for rows in summary.values() for row in rows})
    for step in steps:
        for weight in weights:
            row = next((r for r in summary[weight] if r["step"] == step), None)
            if row is None:
                continue
            cells = []
            for key in keys:
                digits = 4 if key.startswith("rf_loss") else 2
                cell = f"{row[key]:.{digits}f}"
                if f"{key}_std" in row:
                    cell += f" ± {row[f'{key}_std']:.{digits}f}"
                cells.append(cell)
            lines.append(f"| {step} | {weight} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = summary[next(iter(summary))][0]
    k_max = max(int(key.split("@")[1]) for key in first if key.startswith("psnr@") and not key.endswith("_std"))
    panels = [(f"psnr@{k_max}", f"PSNR, {k_max} tokens (dB)"), ("psnr@1", "PSNR, 1 token (dB)"),
              ("rf_loss@K", "RF loss, all tokens")]  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), dpi=100)
    for axis, (key, title) in zip(axes, panels):
        for weight, rows in summary.items():
            steps = [row["step"] for row in rows]
            values = np.array([row[key] for row in rows])
            axis.plot(steps, values, "o-", label=f"x0_loss_weight={weight}")
            if f"{key}_std" in rows[0]:
                spread = np.array([row[f"{key}_std"] for row in rows])
                axis.fill_between(steps, values - spread, values + spread, alpha=0.2)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def report(output_dir: str) -> dict | None:
    runs = load_runs(output_dir)
    if not runs:
        print(f"No run-*.json files in {output_dir}.")
        return None
    summary = summarize(runs)
    table = markdown_table(summary)
    print(table)
    result = {"runs": runs, "summary": summary, "table": table}
    with open(os.path.join(output_dir, "results.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    plot(summary, os.path.join(output_dir, "results.png"))
    print(f"wrote {output_dir}/results.json and results.png")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/aux_loss_ablation")
    parser.add_argument("--preset", default="small_32px", choices=sorted(PRESETS))
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--x0_loss_weights", default="0,1", help="Comma-separated weights, one run each.")
    parser.add_argument("--seeds", default="0", help="Comma-separated training seeds.")
    parser.add_argument("--max_steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--num_checkpoints", type=int, default=4)
    parser.add_argument("--num_eval_images", type=int, default=64)
    parser.add_argument("--budgets", default="1,4", help="Token budgets for PSNR (K is always added).")
    parser.add_argument("--num_inference_steps", type=int, default=10)
    parser.add_argument("--eval_seed", type=int, default=1234)
    parser.add_argument("--report_only", action="store_true", help="Only aggregate existing run-*.json files.")
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    if not args.report_only:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for weight in [float(w) for w in args.x0_loss_weights.split(",")]:
                run_one(args, weight, seed)
    report(args.output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
