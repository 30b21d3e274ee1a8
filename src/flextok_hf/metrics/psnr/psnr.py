"""PSNR as an `evaluate` metric: `evaluate.load(".../flextok_hf/metrics/psnr")` or `Psnr()`."""

import datasets
import evaluate

from flextok_hf.metrics.functional import PSNR_MAX_DB, psnr, score_image_pairs

_DESCRIPTION = """
Peak signal-to-noise ratio, 10 log10(data_range^2 / MSE) in dB, computed per image and averaged
over images. Identical images score `max_psnr` (100 dB by default) instead of infinity.
"""

_CITATION = ""

_KWARGS_DESCRIPTION = """
Args:
    predictions: images, each a float array [C, H, W] (numpy, torch or nested lists). Images may
        differ in size; each must match the shape of its reference.
    references: the reference images, same format.
    data_range: max - min of the pixel range; 2.0 (default) for images in [-1, 1].
    max_psnr: cap in dB for identical images (default 100); None gives inf.
Returns:
    psnr: mean per-image PSNR in dB.
Example:
    >>> metric = Psnr()
    >>> metric.compute(predictions=[np.zeros((3, 8, 8))], references=[np.full((3, 8, 8), 0.5)])
    {'psnr': 12.041199826559248}
"""

IMAGE_FEATURE = datasets.List(datasets.List(datasets.List(datasets.Value("float32"))))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Psnr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": IMAGE_FEATURE, "references": IMAGE_FEATURE}),
        )

    def _compute(self, predictions, references, data_range=2.0, max_psnr=PSNR_MAX_DB):
        scores = score_image_pairs(psnr, predictions, references, data_range=data_range, max_psnr=max_psnr)
        return {"psnr": float(scores.mean())}
