"""Rate-distortion report files: `rate_distortion.json`, a Markdown table and a plot (plus the generic writer the
generation evaluation reuses)."""

from __future__ import annotations

import json
import os

REPORT_FILES = ("rate_distortion.json", "rate_distortion.md", "rate_distortion.png")


def _cell(row: dict, key: str, digits: int) -> str:
    if row.get(key) is None:
        return "–"
    return f"{row[key]:.{digits}f} ± {row[f'{key}_std']:.{digits}f}"


def format_markdown(results: dict) -> str:
    """The markdown report: settings, then one table row per budget."""
    fd_key = results["fd_key"]
    probe = results.get("linear_probe")
    probe_by_budget = dict(zip(probe["budgets"], probe["accuracy"])) if probe else {}
    header = "| budget (tokens) | PSNR (dB) | MAE | SSIM | FD (`" + fd_key + "`) | recon accuracy |"
    rule = "|---|---|---|---|---|---|"
    if probe:
        header, rule = header + " linear probe |", rule + "---|"
    lines = [
        f"# Rate-distortion: `{results['model']}` on `{results['dataset']}`",
        "",
        f"- {results['num_samples']} images at {results['image_size']}x{results['image_size']}, K = "
        f"{results['num_registers']} registers; decoder seeds {results['seeds']}, {results['num_inference_steps']} "
        f"steps{' of ' + results['scheduler'] if results.get('scheduler') else ''}, guidance scale {results['guidance_scale']} ({'APG' if results['adaptive_guidance'] else 'CFG'}).",
        "- Values are mean ± sample std over decoder seeds; each seed's value is the mean over images. PSNR/MAE on "
        f"[-1, 1] images (data range 2); SSIM with a {results['ssim_win_size']}-px Gaussian window.",
        f"- FD: Fréchet distance between reconstructions and originals in the feature space of "
        f"`{results['feature_network']}` (not FID).",
    ]
    if results.get("original_accuracy") is not None:
        lines.append(
            f"- Classifier `{results['classifier']}`: accuracy on the original images "
            f"{100 * results['original_accuracy']:.2f} %; `recon accuracy` is its accuracy on the reconstructions."
        )
    if probe:
        lines.append(
            f"- Linear probe: logistic regression on the FSQ codes of the first k tokens (zero-padded to K), "
            f"{probe['num_train']} train / {probe['num_test']} test images; majority baseline "
            f"{probe['majority_baseline']:.3f}."
        )
    reliance = results.get("token_reliance")
    if reliance:
        per_sigma = "; ".join(
            f"sigma {sigma}: {values['true']:.4f} / {values['shuffled']:.4f} / {values['null']:.4f}"
            for sigma, values in reliance["per_sigma"].items()
        )
        lines.append(
            f"- Token reliance (does the decoder read its tokens?): relative RF-loss gap {reliance['gap']:.3f} between "
            f"shuffled and true registers (0 = ignored), on {reliance['num_images']} images; RF loss true / shuffled / "
            f"null: {per_sigma}."
        )
    lines += ["", header, rule]
    for row in results["per_budget"]:
        cells = [
            str(row["budget"]),
            _cell(row, "psnr", 2),
            _cell(row, "mae", 4),
            _cell(row, "ssim", 4),
            _cell(row, fd_key, 3),
            _cell(row, "recon_accuracy", 3),
        ]
        if probe:
            value = probe_by_budget.get(row["budget"])
            cells.append("–" if value is None else f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_rate_distortion(results: dict, path: str) -> None:
    """PSNR vs budget (log2 axis, error bars over seeds); second panel: accuracies if labels exist, else SSIM."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = results["per_budget"]
    budgets = [row["budget"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.errorbar(budgets, [r["psnr"] for r in rows], yerr=[r["psnr_std"] for r in rows], marker="o", capsize=3)
    left.set(xlabel="tokens (k)", ylabel="PSNR (dB)", title="Rate-distortion")
    probe = results.get("linear_probe")
    if rows[0].get("recon_accuracy") is not None:
        right.errorbar(
            budgets,
            [r["recon_accuracy"] for r in rows],
            yerr=[r["recon_accuracy_std"] for r in rows],
            marker="o",
            capsize=3,
            label="classifier on reconstructions",
        )
        right.axhline(results["original_accuracy"], color="gray", linestyle="--", label="classifier on originals")
        right.set(ylabel="accuracy", title="Recognisability", ylim=(0, 1.02))
    else:
        right.errorbar(budgets, [r["ssim"] for r in rows], yerr=[r["ssim_std"] for r in rows], marker="o", capsize=3)
        right.set(ylabel="SSIM", title="Structural similarity")
    if probe:
        right.plot(probe["budgets"], probe["accuracy"], marker="s", label="linear probe on codes")
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="lower right", fontsize=8)
    right.set_xlabel("tokens (k)")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(budgets, [str(k) for k in budgets])
        axis.grid(alpha=0.3)
    figure.suptitle(f"{results['model']} on {results['dataset']} ({results['num_samples']} images)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report_files(results: dict, output_dir, file_names, to_markdown, plot) -> dict[str, str]:
    """Writes `results` as JSON, `to_markdown(results)` and `plot(results, path)` to the `.json` / `.md` / `.png` of
    `file_names` in `output_dir`; returns the paths by extension."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {name.rsplit(".", 1)[1]: os.path.join(output_dir, name) for name in file_names}
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    with open(paths["md"], "w", encoding="utf-8") as handle:
        handle.write(to_markdown(results))
    plot(results, paths["png"])
    return paths


def write_report(results: dict, output_dir: str | os.PathLike) -> dict[str, str]:
    """Write `rate_distortion.json`, `rate_distortion.md` and `rate_distortion.png`; returns their paths."""
    return write_report_files(results, output_dir, REPORT_FILES, format_markdown, plot_rate_distortion)


__all__ = ["REPORT_FILES", "format_markdown", "plot_rate_distortion", "write_report", "write_report_files"]
