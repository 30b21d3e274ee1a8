"""What the bundled `evaluate` scripts (`mae/`, `psnr/`, `ssim/`, `frechet_distance/`) share.

The scripts import this module by its absolute path, since `evaluate.load` copies a script out of the package (a
relative import would fail there). Only functions and constants live here: `evaluate.load` takes the first
`EvaluationModule` subclass in a script's namespace as the metric, so a shared base class would be picked instead.
"""

import datasets
import evaluate

from .functional import score_image_pairs

IMAGE_FEATURE = datasets.List(datasets.List(datasets.List(datasets.Value("float32"))))
VECTOR_FEATURE = datasets.List(datasets.Value("float32"))

IMAGE_PAIR_ARGS = """
Args:
    predictions: images, each a float array [C, H, W] (numpy, torch or nested lists). Images may
        differ in size; each must match the shape of its reference.
    references: the reference images, same format."""

EXAMPLE_PAIR = "predictions=[np.zeros((3, 8, 8))], references=[np.full((3, 8, 8), 0.5)]"


def image_pair_kwargs_description(extra_args: str, key: str, meaning: str, class_name: str, result: str) -> str:
    """The `inputs_description` of an image-pair metric: [`IMAGE_PAIR_ARGS`] then `extra_args` (indented lines),
    what `key` holds, and an example on one all-zero / all-0.5 pair whose output is `{key: result}`."""
    return (
        f"{IMAGE_PAIR_ARGS}\n{extra_args}Returns:\n    {key}: {meaning}\nExample:\n    >>> metric = {class_name}()\n"
        f"    >>> metric.compute({EXAMPLE_PAIR})\n    {{'{key}': {result}}}\n"
    )


def bibtex_article(key: str, **fields: str) -> str:
    """A `_CITATION`: a BibTeX `@article` entry `key` with `fields` in order, one per line."""
    body = ",\n".join(f"  {name}={{{value}}}" for name, value in fields.items())
    return f"\n@article{{{key},\n{body}\n}}\n"


def paired_metric_info(description: str, citation: str, inputs_description: str, feature=IMAGE_FEATURE, **kwargs):
    """`evaluate.MetricInfo` of a metric over paired `predictions` / `references` columns of `feature`."""
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=datasets.Features({"predictions": feature, "references": feature}),
        **kwargs,
    )


def mean_image_score(key: str, score, predictions, references, **kwargs) -> dict:
    """`{key: mean over image pairs of score(prediction, reference, **kwargs)}`."""
    return {key: float(score_image_pairs(score, predictions, references, **kwargs).mean())}
