"""Image metrics for flextok_hf: plain torch functions plus `evaluate` modules.

- `flextok_hf.metrics.functional`: `psnr`, `mae`, `ssim`, `frechet_distance` on `[B, C, H, W]`
  tensors, and the streaming `FeatureStatistics` / `FrechetDistance` (re-exported here).
- `evaluate` modules, one folder each (`psnr/`, `mae/`, `ssim/`, `frechet_distance/`):
  `load("psnr")` is `evaluate.load(<this folder>/psnr)`; the classes `Psnr`, `Mae`, `Ssim`,
  `FrechetDistanceMetric` are importable from here too (imported lazily, so importing this package
  does not import evaluate).

- `classifier`: `FlexTokImageClassifier` (+ `FlexTokClassifierConfig`), the small CNN used as the offline feature
  network (`ClassifierFeatureNetwork`) and quality bar; `load_default_classifier()` loads the shipped weights
  (imported lazily too).

The bare functions are not re-exported here because `flextok_hf.metrics.psnr` etc. name the
evaluate module folders; use `flextok_hf.metrics.functional.psnr`.
"""

import importlib
import os

from .functional import FeatureStatistics, FrechetDistance, LayerFeatures

METRICS_DIR = os.path.dirname(os.path.abspath(__file__))
METRIC_NAMES = ("psnr", "mae", "ssim", "frechet_distance")
_METRIC_CLASSES = {"Psnr": "psnr", "Mae": "mae", "Ssim": "ssim", "FrechetDistanceMetric": "frechet_distance"}
_CLASSIFIER_NAMES = (
    "ClassifierFeatureNetwork",
    "FlexTokClassifierConfig",
    "FlexTokImageClassifier",
    "load_default_classifier",
)

__all__ = [
    "METRICS_DIR",
    "METRIC_NAMES",
    "FeatureStatistics",
    "FrechetDistance",
    "LayerFeatures",
    "metric_path",
    "load",
    *_METRIC_CLASSES,
    *_CLASSIFIER_NAMES,
]


def metric_path(name: str) -> str:
    """Folder of the evaluate module `name` (one of `METRIC_NAMES`), for `evaluate.load(folder)`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"`name` must be one of {METRIC_NAMES}, got {name!r}.")
    return os.path.join(METRICS_DIR, name)


def load(name: str, **kwargs):
    """`evaluate.load` of a bundled metric by name (offline); `kwargs` go to `evaluate.load`."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


def __getattr__(name: str):
    if name in _METRIC_CLASSES:
        folder = _METRIC_CLASSES[name]
        module = importlib.import_module(f"{__name__}.{folder}.{folder}")
        value = globals()[name] = getattr(module, name)
        return value
    if name in _CLASSIFIER_NAMES:
        value = globals()[name] = getattr(importlib.import_module(f"{__name__}.classifier"), name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
