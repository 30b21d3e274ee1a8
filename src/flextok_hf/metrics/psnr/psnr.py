"""PSNR as an `evaluate` metric: `evaluate.load(".../flextok_hf/metrics/psnr")` or `Psnr()`."""

import evaluate

from flextok_hf.metrics.evaluate_helpers import image_pair_kwargs_description, mean_image_score, paired_metric_info
from flextok_hf.metrics.functional import PSNR_MAX_DB, psnr

_DESCRIPTION = """
Peak signal-to-noise ratio, 10 log10(data_range^2 / MSE) in dB, computed per image and averaged
over images. Identical images score `max_psnr` (100 dB by default) instead of infinity.
"""

_CITATION = ""

_EXTRA_ARGS = """\
    data_range: max - min of the pixel range; 2.0 (default) for images in [-1, 1].
    max_psnr: cap in dB for identical images (default 100); None gives inf.
"""

_KWARGS_DESCRIPTION = image_pair_kwargs_description(
    _EXTRA_ARGS,
    "psnr",
    "mean per-image PSNR in dB.",
    "Psnr",
    "12.041199826559248",
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Psnr(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, data_range=2.0, max_psnr=PSNR_MAX_DB):
        return mean_image_score("psnr", psnr, predictions, references, data_range=data_range, max_psnr=max_psnr)
