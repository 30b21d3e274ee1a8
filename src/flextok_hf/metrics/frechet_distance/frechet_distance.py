"""Fréchet distance between feature sets as an `evaluate` metric.

`evaluate.load(".../flextok_hf/metrics/frechet_distance")` or `FrechetDistanceMetric()`. The
inputs are feature vectors that the caller computed with some feature network; the result key
names that network, `fd_<feature_network_name>`. It is FID only when the features are
Inception-v3 pool features; never report another network's score as FID.
"""

import evaluate
import numpy as np

from flextok_hf.metrics.evaluate_helpers import VECTOR_FEATURE, bibtex_article, paired_metric_info
from flextok_hf.metrics.functional import FeatureStatistics, frechet_distance

_DESCRIPTION = """
Fréchet distance between Gaussians fitted to two sets of feature vectors:
||mu_p - mu_r||^2 + Tr(S_p + S_r - 2 (S_p S_r)^(1/2)), with unbiased (ddof=1) covariances,
computed in float64. Inputs are features, not images: run the images through a feature network
first (see flextok_hf.metrics.FrechetDistance for the streaming version over a network).
"""

_CITATION = bibtex_article(
    "dowson1982frechet",
    title="The Fr{\\'e}chet distance between multivariate normal distributions",
    author="Dowson, D. C. and Landau, B. V.",
    journal="Journal of Multivariate Analysis",
    volume="12",
    number="3",
    pages="450--455",
    year="1982",
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: features of generated/reconstructed images, each a float vector [D].
    references: features of real images, each a float vector [D]. evaluate stores the two
        columns as paired rows, so every add_batch/compute call takes equally many of each; for
        unequal counts use flextok_hf.metrics.FeatureStatistics directly.
    feature_network_name: required name of the network that produced the features; it forms the
        result key.
Returns:
    fd_<feature_network_name>: the Fréchet distance.
Example:
    >>> metric = FrechetDistanceMetric()
    >>> feats = np.random.default_rng(0).normal(size=(64, 8))
    >>> metric.compute(predictions=feats + 1.0, references=feats, feature_network_name="toy")
    {'fd_toy': 8.00000...}  # ||1||^2 = 8, up to the float32 storage of the features
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FrechetDistanceMetric(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, feature=VECTOR_FEATURE)

    def _compute(self, predictions, references, feature_network_name=None):
        if not isinstance(feature_network_name, str) or not feature_network_name:
            raise ValueError(
                "`feature_network_name` must be a non-empty string naming the feature network (it forms the "
                f"result key fd_<name>), got {feature_network_name!r}."
            )
        generated = FeatureStatistics().update(np.asarray(predictions, dtype=np.float64))
        real = FeatureStatistics().update(np.asarray(references, dtype=np.float64))
        value = frechet_distance(generated.mean, generated.covariance, real.mean, real.covariance)
        return {f"fd_{feature_network_name}": value}
