"""The `psnr` evaluate module (`evaluate.load` this folder, or use `Psnr` directly)."""

from .psnr import Psnr

__all__ = ["Psnr"]
