"""Adapt a FlexTok tokenizer trained on MNIST to Animal-MNIST with LoRA, and compare PSNR per token budget.

Step 1, a small tokenizer (the 16x16 `tiny` preset, 8 tokens) trained on MNIST only:

    OMP_NUM_THREADS=1 flextok-hf train-tokenizer --config tiny --fsq_levels 8,5,5,5 --null_condition_dropout_prob 0.1 \
        --nested_dropout_mode pow2 --dataset mnist --output_dir runs/lora_demo/mnist --max_steps 1600 \
        --per_device_train_batch_size 32 --learning_rate 2e-3 --warmup_steps 100 --lr_scheduler_type cosine \
        --eval_steps 0.5 --save_strategy no --num_sample_images 8 --sample_every_n_steps 0 --logging_steps 100 \
        --dataloader_num_workers 0 --seed 0 --disable_tqdm true

Step 2, LoRA adapters (rank 8, decoder only) trained on Animal-MNIST, then the before/after table on the test images of
both datasets (`--compare_datasets`):

    OMP_NUM_THREADS=1 python examples/finetune_lora.py --model_name_or_path runs/lora_demo/mnist \
        --dataset animal_mnist --output_dir runs/lora_demo/animal_lora --lora_r 8 --lora_alpha 16 --max_steps 400 \
        --per_device_train_batch_size 32 --learning_rate 2e-3 --warmup_steps 40 --lr_scheduler_type cosine \
        --eval_steps 0.5 --save_strategy no --num_sample_images 8 --sample_every_n_steps 0 --logging_steps 50 \
        --dataloader_num_workers 0 --seed 0 --disable_tqdm true --compare_datasets animal_mnist,mnist \
        --compare_images 128

Every `flextok-hf finetune-lora` flag is accepted (`--lora_encoder` also adapts the encoder). The comparison decodes the
first `--compare_images` test images of each dataset from their first k tokens (k = 1, 2, 4, ..., K; 20 Euler steps,
no guidance, the same noise per image for both models) with the base model and with the adapted model, and also
reports their rectified-flow loss (the training objective, fixed noise and sigmas) per budget and with no token
("null"). It writes `<output_dir>/lora_comparison.json` and `.md`. `--skip_training` only runs the comparison for an existing adapter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def compare(base_path: str, adapter_dir: str, datasets, num_images: int, num_inference_steps: int, seed: int) -> dict:
    import torch

    from flextok_hf import FlexTokModel
    from flextok_hf.data import load_image_dataset
    from flextok_hf.evaluation import default_budgets
    from flextok_hf.image_processing_flextok import FlexTokImageProcessor
    from flextok_hf.training.lora import budget_psnr, budget_rf_loss, load_lora

    base = FlexTokModel.from_pretrained(base_path).eval()
    adapted = load_lora(adapter_dir, base_model=FlexTokModel.from_pretrained(base_path)).eval()
    budgets = default_budgets(base.config.num_registers)
    processor = FlexTokImageProcessor.from_model_config(base.config)
    results = {"base": base_path, "adapter": adapter_dir, "budgets": budgets, "num_images": num_images, "rows": []}
    for name in datasets:
        test = load_image_dataset(name, "test").select(range(num_images))
        pixel_values = processor(list(test["image"]), return_tensors="pt")["pixel_values"]
        before = budget_psnr(base, pixel_values, budgets, num_inference_steps, seed=seed)
        after = budget_psnr(adapted, pixel_values, budgets, num_inference_steps, seed=seed)
        loss_before = budget_rf_loss(base, pixel_values, budgets, seed=seed)
        loss_after = budget_rf_loss(adapted, pixel_values, budgets, seed=seed)
        with torch.no_grad():
            same_ids = base.encode(pixel_values).token_ids == adapted.encode(pixel_values=pixel_values).token_ids
        for k in [*budgets, "null"]:
            results["rows"].append(
                {
                    "dataset": name,
                    "budget": k,
                    "psnr_base": before.get(k),
                    "psnr_lora": after.get(k),
                    "rf_loss_base": loss_before[k],
                    "rf_loss_lora": loss_after[k],
                }  # fmt: skip
            )
        results[f"{name}_same_token_ids"] = float(same_ids.float().mean())
    return results


def markdown(results: dict) -> str:
    lines = [
        "| dataset | tokens | PSNR base (dB) | PSNR LoRA (dB) | gain (dB) | RF loss base | RF loss LoRA |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        if row["psnr_base"] is None:  # the null condition: RF loss only
            psnr_cells = "- | - | -"
        else:
            gain = row["psnr_lora"] - row["psnr_base"]
            psnr_cells = f"{row['psnr_base']:.2f} | {row['psnr_lora']:.2f} | {gain:+.2f}"
        lines.append(
            f"| {row['dataset']} | {row['budget']} | {psnr_cells} | {row['rf_loss_base']:.4f} | "
            f"{row['rf_loss_lora']:.4f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--compare_datasets", default=None, help="Datasets to compare on (default: --dataset).")
    parser.add_argument("--compare_images", type=int, default=128)
    parser.add_argument("--compare_num_inference_steps", type=int, default=20)
    parser.add_argument("--skip_training", action="store_true")
    options, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    from flextok_hf.training.lora import finetune_lora, parse_lora_args

    if "-h" in rest or "--help" in rest:
        print(__doc__)
        parse_lora_args(["--help"])
    lora_args, data_args, training_args = parse_lora_args(rest)
    if not options.skip_training:
        finetune_lora((lora_args, data_args, training_args))
    datasets = (options.compare_datasets or data_args.dataset).split(",")
    results = compare(
        lora_args.model_name_or_path,
        training_args.output_dir,
        [name.strip() for name in datasets if name.strip()],
        options.compare_images,
        options.compare_num_inference_steps,
        training_args.seed,
    )
    table = markdown(results)
    print(table)
    with open(os.path.join(training_args.output_dir, "lora_comparison.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    with open(os.path.join(training_args.output_dir, "lora_comparison.md"), "w") as handle:
        handle.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
