"""Mean absolute error as an `evaluate` metric: `evaluate.load(".../flextok_hf/metrics/mae")` or `Mae()`."""

import datasets
import evaluate

from flextok_hf.metrics.functional import mae, score_image_pairs

_DESCRIPTION = """
Mean absolute pixel error, computed per image (mean over channels and pixels) and averaged over
images. In pixel units: for images in [-1, 1] it lies in [0, 2].
"""

_CITATION = ""

_KWARGS_DESCRIPTION = """
Args:
    predictions: images, each a float array [C, H, W] (numpy, torch or nested lists). Images may
        differ in size; each must match the shape of its reference.
    references: the reference images, same format.
Returns:
    mae: mean per-image absolute error.
Example:
    >>> metric = Mae()
    >>> metric.compute(predictions=[np.zeros((3, 8, 8))], references=[np.full((3, 8, 8), 0.5)])
    {'mae': 0.5}
"""

IMAGE_FEATURE = datasets.List(datasets.List(datasets.List(datasets.Value("float32"))))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Mae(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": IMAGE_FEATURE, "references": IMAGE_FEATURE}),
        )

    def _compute(self, predictions, references):
        return {"mae": float(score_image_pairs(mae, predictions, references).mean())}
