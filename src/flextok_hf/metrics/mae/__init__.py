"""The `mae` evaluate module (`evaluate.load` this folder, or use `Mae` directly)."""

from .mae import Mae

__all__ = ["Mae"]
