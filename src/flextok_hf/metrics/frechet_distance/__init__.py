"""The `frechet_distance` evaluate module (`evaluate.load` this folder, or use `FrechetDistanceMetric` directly)."""

from .frechet_distance import FrechetDistanceMetric

__all__ = ["FrechetDistanceMetric"]
