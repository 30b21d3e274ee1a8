"""flextok_hf: FlexTok (arXiv 2502.13967) as a Hugging Face-native package."""

from transformers import AutoConfig, AutoModel

from .configuration_flextok import FlexTokConfig
from .modeling_flextok import FlexTokEncoderOutput, FlexTokModel, FlexTokOutput
from .scheduling_flextok import FlexTokFlowScheduler

__version__ = "0.1.0"

AutoConfig.register(FlexTokConfig.model_type, FlexTokConfig, exist_ok=True)
AutoModel.register(FlexTokConfig, FlexTokModel, exist_ok=True)

__all__ = [
    "FlexTokConfig",
    "FlexTokModel",
    "FlexTokOutput",
    "FlexTokEncoderOutput",
    "FlexTokFlowScheduler",
]
