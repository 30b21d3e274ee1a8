"""Mean absolute error as an `evaluate` metric: `evaluate.load(".../flextok_hf/metrics/mae")` or `Mae()`."""

import evaluate

from flextok_hf.metrics.evaluate_helpers import image_pair_kwargs_description, mean_image_score, paired_metric_info
from flextok_hf.metrics.functional import mae

_DESCRIPTION = """
Mean absolute pixel error, computed per image (mean over channels and pixels) and averaged over
images. In pixel units: for images in [-1, 1] it lies in [0, 2].
"""

_CITATION = ""

_KWARGS_DESCRIPTION = image_pair_kwargs_description("", "mae", "mean per-image absolute error.", "Mae", "0.5")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Mae(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        return mean_image_score("mae", mae, predictions, references)
