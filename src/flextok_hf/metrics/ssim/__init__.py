"""The `ssim` evaluate module (`evaluate.load` this folder, or use `Ssim` directly)."""

from .ssim import Ssim

__all__ = ["Ssim"]
