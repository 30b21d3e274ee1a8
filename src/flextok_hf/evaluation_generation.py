"""Does the prior generate what was asked for? Classifier accuracy of generated images per token budget.

```python
from flextok_hf.evaluation_generation import conditions_from_dataset, evaluate_conditional_generation

classifier = load_default_classifier()
conditions, targets = conditions_from_dataset(load_image_dataset("mnist", "test"), classifier, "caption")
results = evaluate_conditional_generation(text2image_pipe, conditions, targets, classifier, budgets=[1, 2, 4, 32])
write_generation_report(results, "runs/prior/eval")
```

For every budget k, each condition (a prompt, or a class id for a class-conditional pipeline) is generated
`num_images_per_condition` times from the first k ids the prior samples; the classifier labels the images and
`class_accuracy` is the share labelled as the requested class (chance is 1 / number of classifier labels).
"""

from __future__ import annotations

import os

import torch
from tqdm.auto import tqdm

from .evaluation import write_report_files

GENERATION_REPORT_FILES = ("generation_accuracy.json", "generation_accuracy.md", "generation_accuracy.png")


def conditions_from_dataset(dataset, classifier, condition_column: str = "caption", label_column: str = "label"):
    """Distinct conditions of a labelled dataset and the classifier label each should produce.

    Returns `(conditions, target_label_ids)`: the distinct values of `condition_column` (captions, or class ids with
    `condition_column="label"`) in order of first appearance, and for each the classifier's label id of the rows'
    class (`classifier.label_ids_for` maps the dataset's class names)."""
    for column in (condition_column, label_column):
        if column not in dataset.column_names:
            raise ValueError(f"`dataset` has no column {column!r}; columns: {dataset.column_names}.")
    names = dataset.features[label_column].names if hasattr(dataset.features[label_column], "names") else None
    if names is None:
        raise ValueError(f"`{label_column}` must be a ClassLabel column (its names map to the classifier's labels).")
    mapping = classifier.label_ids_for(names)
    if mapping is None:
        raise ValueError(f"The classifier has no label for some of the dataset's classes {names}.")
    targets: dict = {}
    for condition, label in zip(dataset[condition_column], dataset[label_column]):
        targets.setdefault(condition, mapping[label])
    return list(targets), list(targets.values())


def _generate(pipeline, conditions: list, num_images: int, budget: int, generator, sampling: dict) -> torch.Tensor:
    """Images `[len(conditions) * num_images, 3, H, W]` in [-1, 1], condition by condition."""
    from .pipeline_flextok_text2image import FlexTokText2ImagePipeline

    if isinstance(pipeline, FlexTokText2ImagePipeline):
        inputs = {"prompt": conditions, "num_images_per_prompt": num_images}
    else:
        inputs = {"class_labels": conditions, "num_images_per_label": num_images}
    output = pipeline(
        **inputs,
        num_tokens=budget,
        generator=generator,
        output_type="raw",
        **sampling,
    )
    return output.images.clamp(-1, 1)


@torch.no_grad()
def evaluate_conditional_generation(
    pipeline,
    conditions: list,
    target_label_ids: list[int],
    classifier,
    budgets: list[int] | None = None,
    num_images_per_condition: int = 4,
    seed: int = 0,
    condition_names: list[str] | None = None,
    **sampling,
) -> dict:
    """Classifier accuracy of generations per budget.

    Args:
        pipeline: a `FlexTokText2ImagePipeline` (conditions are prompts) or `FlexTokClassToImagePipeline` (class ids
            or names).
        conditions, target_label_ids: one classifier label id per condition.
        classifier: a `FlexTokImageClassifier` (any module with `classify(images [B,3,H,W] in [-1,1]) -> [B]`).
        budgets: token budgets k (default 1, 2, 4, ..., K).
        num_images_per_condition: images per condition and budget.
        seed: the generator of each budget is seeded with it (the same seed for every budget).
        **sampling: passed to the pipeline (`prior_guidance_scale`, `num_inference_steps`, `temperature`, ...).

    Returns a dict with `per_budget` rows `{"budget", "class_accuracy", "per_condition": [...]}` and the settings.
    """
    if not conditions or len(conditions) != len(target_label_ids):
        raise ValueError(
            f"`conditions` must be non-empty and as long as `target_label_ids`, got {len(conditions)} and "
            f"{len(target_label_ids)}."
        )
    if not isinstance(num_images_per_condition, int) or num_images_per_condition < 1:
        raise ValueError(f"`num_images_per_condition` must be a positive int, got {num_images_per_condition!r}.")
    max_tokens = pipeline.flextok.config.num_registers
    budgets = budgets or [2**i for i in range(max_tokens.bit_length()) if 2**i <= max_tokens]
    for budget in budgets:
        if not isinstance(budget, int) or not 1 <= budget <= max_tokens:
            raise ValueError(f"`budgets` must hold ints in [1, {max_tokens}], got {budget!r}.")
    targets = torch.tensor(target_label_ids).repeat_interleave(num_images_per_condition)
    rows = []
    for budget in tqdm(budgets, desc="generation accuracy per budget"):
        generator = torch.Generator(pipeline.device).manual_seed(seed)
        images = _generate(pipeline, list(conditions), num_images_per_condition, budget, generator, sampling)
        predicted = classifier.classify(images.to(classifier.device)).cpu()
        hits = (predicted == targets).float().view(len(conditions), num_images_per_condition).mean(dim=1)
        rows.append({"budget": budget, "class_accuracy": hits.mean().item(), "per_condition": hits.tolist()})
    num_labels = getattr(getattr(classifier, "config", None), "num_labels", None)
    return {
        "conditions": [str(c) for c in (condition_names or conditions)],
        "target_label_ids": list(map(int, target_label_ids)),
        "num_images_per_condition": num_images_per_condition,
        "seed": seed,
        "chance": 1.0 / num_labels if num_labels else None,
        "sampling": {key: value for key, value in sampling.items() if isinstance(value, (int, float, str, bool))},
        "per_budget": rows,
    }


def format_generation_markdown(results: dict) -> str:
    """Two tables: the accuracy per budget, then one row per condition with its accuracy at every budget."""
    rows = results["per_budget"]
    lines = [
        "# Generation accuracy per token budget",
        "",
        f"- {results['num_images_per_condition']} images per condition and budget (seed {results['seed']}); "
        "accuracy = share of generated images that the classifier labels as the requested class"
        + (f" (chance {results['chance']:.3f})." if results.get("chance") else "."),
    ]
    if results["sampling"]:
        lines.append("- Sampling: " + ", ".join(f"{k}={v}" for k, v in results["sampling"].items()) + ".")
    lines += ["", "| budget (tokens) | accuracy |", "|---|---|"]
    lines += [f"| {row['budget']} | {row['class_accuracy']:.3f} |" for row in rows]
    lines += ["", "| condition | " + " | ".join(f"k={row['budget']}" for row in rows) + " |"]
    lines.append("|---|" + "---|" * len(rows))
    for index, condition in enumerate(results["conditions"]):
        lines.append(f"| `{condition}` | " + " | ".join(f"{row['per_condition'][index]:.2f}" for row in rows) + " |")
    return "\n".join(lines) + "\n"


def plot_generation_accuracy(results: dict, path: str) -> None:
    """Accuracy against budget (log2 axis), with the chance level."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    budgets = [row["budget"] for row in results["per_budget"]]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(budgets, [row["class_accuracy"] for row in results["per_budget"]], marker="o", label="generations")
    if results.get("chance"):
        axis.axhline(results["chance"], color="gray", linestyle="--", label="chance")
    axis.set(xlabel="tokens (k)", ylabel="classified as requested", ylim=(0, 1.02), title="Conditioning vs budget")
    axis.set_xscale("log", base=2)
    axis.set_xticks(budgets, [str(k) for k in budgets])
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_generation_report(results: dict, output_dir: str | os.PathLike) -> dict[str, str]:
    """Write `generation_accuracy.{json,md,png}` to `output_dir`; returns their paths by extension."""
    return write_report_files(
        results, output_dir, GENERATION_REPORT_FILES, format_generation_markdown, plot_generation_accuracy
    )


__all__ = [
    "conditions_from_dataset",
    "evaluate_conditional_generation",
    "format_generation_markdown",
    "plot_generation_accuracy",
    "write_generation_report",
]
