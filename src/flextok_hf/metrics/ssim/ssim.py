"""SSIM (Wang et al. 2004) as an `evaluate` metric: `evaluate.load(".../flextok_hf/metrics/ssim")` or `Ssim()`."""

import evaluate

from flextok_hf.metrics.evaluate_helpers import bibtex_article, mean_image_score, paired_metric_info
from flextok_hf.metrics.functional import ssim

_DESCRIPTION = """
Structural similarity (Wang et al. 2004): K1 = 0.01, K2 = 0.03, an 11x11 Gaussian window with
sigma = 1.5 by default, population (co)variances, averaged over valid window positions and
channels per image, then over images. Matches skimage.metrics.structural_similarity with
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0.
"""

_CITATION = bibtex_article(
    "wang2004ssim",
    title="Image quality assessment: from error visibility to structural similarity",
    author="Wang, Zhou and Bovik, Alan C. and Sheikh, Hamid R. and Simoncelli, Eero P.",
    journal="IEEE Transactions on Image Processing",
    volume="13",
    number="4",
    pages="600--612",
    year="2004",
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: images, each a float array [C, H, W] (numpy, torch or nested lists) with
        H, W >= win_size. Images may differ in size; each must match its reference.
    references: the reference images, same format.
    data_range: max - min of the pixel range; 2.0 (default) for images in [-1, 1].
    win_size: odd window size (default 11).
    gaussian: Gaussian window of std `sigma` (default True) or a uniform window (False).
    sigma: Gaussian std (default 1.5).
    use_sample_covariance: scale (co)variances by N / (N - 1) (default False, as in the paper).
Returns:
    ssim: mean per-image SSIM (1 for identical images).
Example:
    >>> metric = Ssim()
    >>> image = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16))
    >>> metric.compute(predictions=[image], references=[image])
    {'ssim': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Ssim(evaluate.Metric):
    def _info(self):
        return paired_metric_info(
            _DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, reference_urls=["https://doi.org/10.1109/TIP.2003.819861"]
        )

    def _compute(
        self,
        predictions,
        references,
        data_range=2.0,
        win_size=11,
        gaussian=True,
        sigma=1.5,
        use_sample_covariance=False,
    ):
        return mean_image_score(
            "ssim",
            ssim,
            predictions,
            references,
            data_range=data_range,
            win_size=win_size,
            gaussian=gaussian,
            sigma=sigma,
            use_sample_covariance=use_sample_covariance,
        )
