"""flextok_hf: FlexTok (arXiv 2502.13967) as a Hugging Face-native package."""

__version__ = "0.1.0"
