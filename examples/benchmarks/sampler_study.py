"""Fewer decoder evaluations at equal quality? Samplers x steps on the shipped default model.

Decodes the first held-out test images of MNIST and Animal-MNIST at each token budget with each sampler — FlexTok's
uniform Euler grid (20 steps is the reference), Euler with a timestep `shift` (below 1: steps concentrated near the
data end), and diffusers' second-order `FlowMatchHeunDiscreteScheduler` — all from the same initial noise (the noise
rule of `flextok_hf.decoding`) with the stored guidance. Per budget it reports PSNR to the original, the share of
reconstructions the shipped classifier puts in the original's class and the Fréchet distance of the classifier's
features (reconstructions vs originals), plus paired differences to Euler-20 (same images, same noise). Cost is counted
in decoder evaluations (NFE; one per Euler step, `2 N - 1` for N Heun steps; each CFG pair is one batched call).

Results are cached per sampler next to the markdown (`.json` summaries, `_raw.npz` per-image results, not committed),
so an interrupted run resumes. On one CPU thread the full study takes about 45 minutes.

    python examples/benchmarks/sampler_study.py --num-samples 64 --seeds 0 \
        --output examples/benchmarks/results/sampler_study.md
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

# (solver, steps, shift), most informative first (an interrupted run still answers the question)
SAMPLERS = (
    ("euler", 20, 1.0),
    ("heun", 5, 1.0),
    ("euler", 10, 1.0),
    ("euler", 10, 2.0),
    ("heun", 5, 2.0),
    ("heun", 5, 1.5),
    ("euler", 10, 1.5),
    ("euler", 10, 3.0),
    ("euler", 8, 2.0),
    ("euler", 8, 3.0),
    ("euler", 6, 2.0),
    ("euler", 6, 3.0),
    ("euler", 5, 2.0),
    ("euler", 5, 3.0),
    ("heun", 4, 1.0),
    ("heun", 3, 1.0),
    ("euler", 8, 1.0),
    ("euler", 5, 1.0),
    ("euler", 10, 0.5),
    ("heun", 5, 0.5),
    ("euler", 10, 0.33),
    ("diffusers-heun", 5, 1.0),
)
# The reference sampler again with other decoder seeds (seed + 1000): how far pure noise moves each metric
NOISE_CHECK = ("euler", 20, 1.0)
NOISE_SEED_OFFSET = 1000
DATASETS = ("mnist", "animal_mnist")
BOOTSTRAP = 200


def sampler_key(kind: str, steps: int, shift: float, seed_offset: int = 0) -> str:
    key = f"{kind}-{steps}" + (f"-shift{shift:g}" if shift != 1.0 else "")
    return key + (f"-seed+{seed_offset}" if seed_offset else "")


def nfe(kind: str, steps: int) -> int:
    """Decoder evaluations per image of one decode (a CFG pair counts once: it is one batched call)."""
    return 2 * steps - 1 if kind.endswith("heun") else steps


LABELS = {"euler": "Euler", "heun": "Heun", "diffusers-heun": "Heun, diffusers' grid"}


def make_scheduler(pipe, kind: str, shift: float):
    """`euler`: FlexTok's grid; `heun`: Heun on FlexTok's grid; `diffusers-heun`: diffusers' Heun (its own grid)."""
    from diffusers import FlowMatchHeunDiscreteScheduler

    from flextok_hf import FlexTokFlowHeunScheduler, FlexTokFlowScheduler

    classes = {"euler": FlexTokFlowScheduler, "heun": FlexTokFlowHeunScheduler}
    cls = classes.get(kind, FlowMatchHeunDiscreteScheduler)
    config = {key: value for key, value in pipe.scheduler.config.items() if key in cls._get_init_keys(cls)}
    return cls.from_config({**config, "shift": shift})


@torch.no_grad()
def prepare_dataset(pipe, classifier, name: str, num_samples: int, batch_size: int) -> dict:
    """Pixel values, all K ids, classifier targets and the originals' features of the first `num_samples` images."""
    from flextok_hf.data import load_image_dataset
    from flextok_hf.evaluation_data import load_pixel_values, tokenize_all

    pixel_values, labels, label_names = load_pixel_values(
        load_image_dataset(name, "test"), pipe.image_processor, num_samples
    )
    targets = torch.as_tensor(classifier.label_ids_for(label_names))[labels]
    features = torch.cat([classifier.features(classifier.resize(chunk)) for chunk in pixel_values.split(batch_size)])
    return {
        "pixel_values": pixel_values,
        "token_ids": tokenize_all(pipe.flextok, pixel_values, batch_size),
        "targets": targets,
        "features": features.double().numpy(),
    }


@torch.no_grad()
def decode_all(pipe, data: dict, classifier, budgets, seeds, steps: int, batch_size: int) -> dict:
    """Per-image PSNR `[S, J, N]`, classifier hits `[S, J, N]` and features `[S, J, N, D]` of one sampler."""
    from flextok_hf.decoding import iter_decode_at_budgets
    from flextok_hf.metrics.functional import psnr

    num_images = len(data["token_ids"])
    scores = np.zeros((len(seeds), len(budgets), num_images))
    hits = np.zeros((len(seeds), len(budgets), num_images), dtype=bool)
    features = [[[] for _ in budgets] for _ in seeds]
    for s, seed in enumerate(seeds):
        decoded = iter_decode_at_budgets(
            pipe, list(data["token_ids"]), budgets, seed=seed, batch_size=batch_size, num_inference_steps=steps
        )
        for start, j, images in decoded:
            images = images.clamp(-1, 1)
            rows = slice(start, start + images.shape[0])
            scores[s, j, rows] = psnr(images, data["pixel_values"][rows]).double().numpy()
            hits[s, j, rows] = (classifier.classify(images) == data["targets"][rows]).numpy()
            features[s][j].append(classifier.features(classifier.resize(images)).double().numpy())
    stacked = np.stack([np.stack([np.concatenate(chunks) for chunks in per_seed]) for per_seed in features])
    return {"psnr": scores, "hits": hits, "features": stacked}


def frechet(features: np.ndarray, reference: np.ndarray) -> float:
    from flextok_hf.metrics.functional import frechet_distance

    return frechet_distance(
        features.mean(0), np.cov(features, rowvar=False), reference.mean(0), np.cov(reference, rowvar=False)
    )


def summarize(result: dict, reference: dict, real_features: np.ndarray, budgets, rng) -> list[dict]:
    """Per budget: mean PSNR / agreement / FD (mean over seeds) and paired differences to the reference sampler
    (mean and standard error over images for PSNR and agreement; a bootstrap over images for FD)."""
    rows = []
    num_images = result["psnr"].shape[-1]
    draws = rng.integers(0, num_images, size=(BOOTSTRAP, num_images))
    for j, budget in enumerate(budgets):
        d_psnr = (result["psnr"][:, j] - reference["psnr"][:, j]).mean(0)
        d_hits = (result["hits"][:, j].astype(float) - reference["hits"][:, j].astype(float)).mean(0)
        seeds = range(result["psnr"].shape[0])
        fd = np.mean([frechet(result["features"][s, j], real_features) for s in seeds])
        fd_ref = np.mean([frechet(reference["features"][s, j], real_features) for s in seeds])
        boot = [
            np.mean(
                [
                    frechet(result["features"][s, j][idx], real_features[idx])
                    - frechet(reference["features"][s, j][idx], real_features[idx])
                    for s in seeds
                ]
            )
            for idx in draws
        ]
        rows.append(
            {
                "budget": budget,
                "psnr": float(result["psnr"][:, j].mean()),
                "agreement": float(result["hits"][:, j].mean()),
                "fd": float(fd),
                "d_psnr": float(d_psnr.mean()),
                "d_psnr_se": float(d_psnr.std(ddof=1) / np.sqrt(num_images)),
                "d_agreement": float(d_hits.mean()),
                "d_agreement_se": float(d_hits.std(ddof=1) / np.sqrt(num_images)),
                "d_fd": float(fd - fd_ref),
                "d_fd_se": float(np.std(boot, ddof=1)),
            }
        )
    return rows


def holds(rows: list[dict], psnr_tol: float, agreement_tol: float, fd_tol: float) -> bool:
    """The equal-quality criterion on one set (see the report): at every budget ΔPSNR >= -psnr_tol, no significant
    agreement drop (Δ >= -2 paired SE) and an FD at most `fd_tol` (relative) above the reference's; over the budgets
    a mean agreement drop of at most `agreement_tol`."""
    per_budget = all(
        row["d_psnr"] >= -psnr_tol
        and row["d_agreement"] >= -2 * row["d_agreement_se"]
        and row["d_fd"] <= fd_tol * (row["fd"] - row["d_fd"])
        for row in rows
    )
    return bool(per_budget and np.mean([row["d_agreement"] for row in rows]) >= -agreement_tol)


def write_markdown(path: str, study: dict, args) -> None:
    reference = sampler_key("euler", 20, 1.0)
    keys = [key for key in study["order"] if key in study["samplers"]]
    noise_rows = [
        row
        for rows in study["samplers"]
        .get(sampler_key(*NOISE_CHECK, NOISE_SEED_OFFSET), {})
        .get("datasets", {})
        .values()
        for row in rows
    ]
    noise_scale = "not measured"
    if noise_rows:
        noise_scale = (
            f"PSNR moves by up to {max(abs(r['d_psnr']) for r in noise_rows):.2f} dB at a budget, agreement by up to "
            f"{100 * max(abs(r['d_agreement']) for r in noise_rows):.1f} points and the FD by up to "
            f"{100 * max(abs(r['d_fd']) / (r['fd'] - r['d_fd']) for r in noise_rows):.0f} %"
        )
    lines = [
        "# Decoder samplers x steps on the shipped default model",
        "",
        f"Model `{study['model']}` (pixel space, 32x32, K = 32), decoder guidance {study['guidance']}. First "
        f"{args.num_samples} held-out test images of each set, decoder seed(s) {study['seeds']} (the same initial "
        "noise for every sampler), budgets " + ", ".join(map(str, study["budgets"])) + ". Reference: the official "
        "sampler, FlexTok's uniform Euler grid with 20 steps. NFE = decoder evaluations per image (Heun with N steps: "
        "2N - 1; a CFG pair is one batched call). Produced by `examples/benchmarks/sampler_study.py`.",
        "",
        "Columns per budget: PSNR (dB) / class agreement (%) / classifier-feature Fréchet distance. `Δ vs Euler-20`: "
        "paired differences to the reference (same images, same noise), mean over budgets and the worst budget.",
        "",
        f"**Equal-quality criterion** (on both sets): at *every* budget, mean PSNR ≥ Euler-20 − {args.psnr_tol} dB, "
        "no significant drop of class agreement (paired difference ≥ −2 standard errors over images) and an FD at "
        f"most {100 * args.fd_tol:g} % above Euler-20's; and over the {len(study['budgets'])} budgets together "
        f"({len(study['budgets'])} x {args.num_samples} paired decodes per set) class agreement ≥ Euler-20 − "
        f"{100 * args.agreement_tol:g} point. Why these margins: the row `Euler, other seeds` is the reference sampler "
        f"with other decoder noise (seed + {NOISE_SEED_OFFSET}) and shows what noise alone does — {noise_scale}; "
        f"the margins are smaller than that (one image is {100 / args.num_samples:.1f} points of agreement). "
        f"`ΔFD worst` shows the paired FD difference at the budget where it is largest relative to Euler-20's FD, "
        f"± two bootstrap standard errors ({BOOTSTRAP} resamples of the images).",
        "",
    ]
    verdicts = {}
    noise_key = sampler_key(*NOISE_CHECK, NOISE_SEED_OFFSET)
    for name in study["datasets"]:
        lines += [f"## {name}", ""]
        header = "| sampler | steps | NFE | " + " | ".join(f"k={k}" for k in study["budgets"])
        header += " | ΔPSNR mean / worst | Δagree mean / worst (pts) | ΔFD worst (±2se, rel.) | equal quality |"
        lines += [header, "|---|---|---|" + "---|" * len(study["budgets"]) + "---|---|---|---|"]
        for key in keys:
            entry = study["samplers"][key]
            rows = entry["datasets"][name]
            cells = [f"{r['psnr']:.2f} / {100 * r['agreement']:.1f} / {r['fd']:.2f}" for r in rows]
            worst_psnr = min(rows, key=lambda r: r["d_psnr"])
            worst_agree = min(rows, key=lambda r: r["d_agreement"])
            worst_fd = max(rows, key=lambda r: r["d_fd"] / (r["fd"] - r["d_fd"]))
            ok = holds(rows, args.psnr_tol, args.agreement_tol, args.fd_tol)
            verdicts.setdefault(key, []).append(ok)
            lines.append(
                f"| {entry['label']} | {entry['steps']} | {entry['nfe']} | "
                + " | ".join(cells)
                + f" | {np.mean([r['d_psnr'] for r in rows]):+.2f} / {worst_psnr['d_psnr']:+.2f} (k={worst_psnr['budget']})"
                + f" | {100 * np.mean([r['d_agreement'] for r in rows]):+.1f} / "
                f"{100 * worst_agree['d_agreement']:+.1f} (k={worst_agree['budget']})"
                + f" | {worst_fd['d_fd']:+.1f} ± {2 * worst_fd['d_fd_se']:.1f} "
                f"({100 * worst_fd['d_fd'] / (worst_fd['fd'] - worst_fd['d_fd']):+.1f} %, k={worst_fd['budget']})"
                + f" | {'yes' if ok else 'no'}{' (reference)' if key == reference else ''}"
                + f"{' (noise scale)' if key == noise_key else ''} |"
            )
        lines.append("")
    passing = [
        k for k in keys if k not in (reference, noise_key) and all(verdicts[k]) and study["samplers"][k]["nfe"] <= 10
    ]

    def margin(key):  # tie-break at equal NFE: the smallest slack to the criterion, each as a share of its margin
        slacks = []
        for rows in study["samplers"][key]["datasets"].values():
            slacks += [(row["d_psnr"] + args.psnr_tol) / args.psnr_tol for row in rows]
            slacks += [(args.fd_tol - row["d_fd"] / (row["fd"] - row["d_fd"])) / args.fd_tol for row in rows]
            slacks.append((np.mean([row["d_agreement"] for row in rows]) + args.agreement_tol) / args.agreement_tol)
        return min(slacks)

    passing.sort(key=lambda k: (study["samplers"][k]["nfe"], -margin(k)))
    lines += ["## Conclusion", ""]
    if passing:
        best = passing[0]
        entry = study["samplers"][best]
        lines.append(
            "Samplers with ≤ 10 NFE that hold the criterion on both sets: "
            + ", ".join(f"{study['samplers'][k]['label']} ({study['samplers'][k]['nfe']} NFE)" for k in passing)
            + f". Cheapest (ties: the largest margin to the criterion): **{entry['label']}, {entry['steps']} steps = {entry['nfe']} NFE** "
            f"({20 / entry['nfe']:.1f}x fewer decoder evaluations than Euler-20)."
        )
    else:
        lines.append("No sampler with ≤ 10 NFE holds the criterion on both sets.")
    lines += ["", f"Runtime: {study['runtime_seconds'] / 60:.0f} min on {study['device']}.", ""]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))


def main():
    from tqdm.auto import tqdm

    from flextok_hf import FlexTokPipeline
    from flextok_hf.metrics.classifier import load_default_classifier
    from flextok_hf.pretrained import pretrained_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped text2image model)")
    parser.add_argument("--num-samples", type=int, default=64, help="test images per dataset (default 64)")
    parser.add_argument("--seeds", default="0", help="decoder seeds, comma-separated (default 0)")
    parser.add_argument("--budgets", default="1,2,4,8,16,32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samplers", default=None, help="subset of keys, e.g. euler-20,heun-5 (default: all)")
    parser.add_argument("--psnr-tol", type=float, default=0.1, help="allowed mean PSNR drop in dB (default 0.1)")
    parser.add_argument(
        "--agreement-tol", type=float, default=0.01, help="allowed mean agreement drop over budgets (default 0.01)"
    )
    parser.add_argument("--fd-tol", type=float, default=0.05, help="allowed relative FD rise (default 0.05)")
    parser.add_argument("--output", default="examples/benchmarks/results/sampler_study.md")
    args = parser.parse_args()
    budgets = [int(k) for k in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    model_path = args.model or str(pretrained_path("text2image"))
    pipe = FlexTokPipeline.from_pretrained(model_path)
    pipe.set_progress_bar_config(disable=True)
    classifier = load_default_classifier(pipe.flextok.device)
    samplers = [s for s in SAMPLERS if args.samplers is None or sampler_key(*s) in args.samplers.split(",")]

    cache_path = os.path.splitext(args.output)[0] + ".json"
    settings = {"budgets": budgets, "seeds": seeds, "num_samples": args.num_samples}
    study = {}
    if os.path.isfile(cache_path):
        with open(cache_path, encoding="utf-8") as handle:
            study = json.load(handle)
        if study.get("settings") != settings:
            study = {}
    study.setdefault("samplers", {})
    study.update(
        settings=settings,
        model=os.path.relpath(model_path) if args.model else "flextok_hf/pretrained/text2image",
        guidance=f"{pipe.config.guidance_scale:g} ({'APG' if pipe.config.adaptive_guidance else 'CFG'})",
        budgets=budgets,
        seeds=seeds,
        datasets=list(DATASETS),
        order=[sampler_key(*s) for s in SAMPLERS[:1]]
        + [sampler_key(*NOISE_CHECK, NOISE_SEED_OFFSET)]
        + [sampler_key(*s) for s in SAMPLERS[1:]],
        device=f"{pipe.flextok.device.type}, {torch.get_num_threads()} thread(s)",
    )
    start = time.perf_counter()
    data = {name: prepare_dataset(pipe, classifier, name, args.num_samples, args.batch_size) for name in DATASETS}
    raw_path = os.path.splitext(args.output)[0] + "_raw.npz"
    raw = dict(np.load(raw_path)) if os.path.isfile(raw_path) else {}
    if not raw:  # the paired statistics need the per-image results: without them, start over
        study["samplers"] = {}
    reference_key = sampler_key("euler", 20, 1.0)
    todo = [(*NOISE_CHECK, NOISE_SEED_OFFSET)] + [(*s, 0) for s in samplers]
    todo = [s for s in todo if sampler_key(*s) not in study["samplers"]]
    if reference_key not in study["samplers"] and ("euler", 20, 1.0, 0) not in todo:
        todo.insert(0, ("euler", 20, 1.0, 0))
    total = sum(nfe(kind, steps) for kind, steps, _, _ in todo) * len(DATASETS)
    bar = tqdm(total=total, desc="sampler study (NFE x datasets)")
    for kind, steps, shift, seed_offset in todo:
        key = sampler_key(kind, steps, shift, seed_offset)
        pipe.scheduler = make_scheduler(pipe, kind, shift)
        entry = {
            "label": LABELS[kind]
            + (f", shift {shift:g}" if shift != 1.0 else "")
            + (", other seeds" if seed_offset else ""),
            "scheduler": type(pipe.scheduler).__name__,
            "steps": steps,
            "nfe": nfe(kind, steps),
            "scheduler_config": dict(pipe.scheduler.config),
            "datasets": {},
        }
        t0 = time.perf_counter()
        for name in DATASETS:
            run_seeds = [seed + seed_offset for seed in seeds]
            result = decode_all(pipe, data[name], classifier, budgets, run_seeds, steps, args.batch_size)
            for field, value in result.items():
                raw[f"{key}/{name}/{field}"] = value
            bar.update(nfe(kind, steps))
        for name in DATASETS:
            result = {field: raw[f"{key}/{name}/{field}"] for field in ("psnr", "hits", "features")}
            reference = {field: raw[f"{reference_key}/{name}/{field}"] for field in ("psnr", "hits", "features")}
            rng = np.random.default_rng(0)
            entry["datasets"][name] = summarize(result, reference, data[name]["features"], budgets, rng)
        entry["seconds"] = time.perf_counter() - t0
        study["samplers"][key] = entry
        study["runtime_seconds"] = study.get("runtime_seconds", 0.0) + entry["seconds"]
        np.savez_compressed(raw_path, **raw)
        with open(cache_path, "w", encoding="utf-8") as handle:
            json.dump(study, handle, indent=1, default=float)
        write_markdown(args.output, study, args)
        tqdm.write(
            f"{key}: {entry['seconds']:.0f}s, holds={[holds(r, args.psnr_tol, args.agreement_tol, args.fd_tol) for r in entry['datasets'].values()]}"
        )
    bar.close()
    study.setdefault("runtime_seconds", time.perf_counter() - start)
    write_markdown(args.output, study, args)
    print(args.output)


if __name__ == "__main__":
    main()
