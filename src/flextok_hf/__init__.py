"""flextok_hf: FlexTok (arXiv 2502.13967) as a Hugging Face-native package."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM

from .adaptive_budget import FlexTokAutoBudgetOutput
from .configuration_flextok import FlexTokConfig
from .configuration_flextok_ar import FLEXTOK_AR_PRESETS, FlexTokARConfig
from .image_processing_flextok import FlexTokImageProcessor
from .modeling_flextok import FlexTokEncoderOutput, FlexTokModel, FlexTokOutput
from .modeling_flextok_ar import FlexTokARForCausalLM
from .pipeline_flextok import (
    FlexTokCoarseToFineOutput,
    FlexTokPipeline,
    FlexTokPipelineOutput,
    FlexTokStreamOutput,
)
from .pipeline_flextok_class2image import FlexTokClassToImagePipeline
from .pipeline_flextok_text2image import FlexTokText2ImagePipeline
from .pipeline_tokenize import FlexTokTokenizePipeline, register_tokenize_task
from .scheduling_flextok import FlexTokFlowScheduler
from .scheduling_flextok_heun import FlexTokFlowHeunScheduler

__version__ = "0.1.0"

AutoConfig.register(FlexTokConfig.model_type, FlexTokConfig, exist_ok=True)
AutoModel.register(FlexTokConfig, FlexTokModel, exist_ok=True)
AutoImageProcessor.register(FlexTokConfig, image_processor_classes={"pil": FlexTokImageProcessor}, exist_ok=True)
AutoConfig.register(FlexTokARConfig.model_type, FlexTokARConfig, exist_ok=True)
AutoModelForCausalLM.register(FlexTokARConfig, FlexTokARForCausalLM, exist_ok=True)
register_tokenize_task(FlexTokModel)  # the "flextok-tokenize" task (see pipeline_tokenize.py)

__all__ = [
    "FlexTokConfig",
    "FlexTokModel",
    "FlexTokOutput",
    "FlexTokEncoderOutput",
    "FlexTokFlowHeunScheduler",
    "FlexTokFlowScheduler",
    "FlexTokImageProcessor",
    "FlexTokARConfig",
    "FlexTokARForCausalLM",
    "FLEXTOK_AR_PRESETS",
    "FlexTokPipeline",
    "FlexTokPipelineOutput",
    "FlexTokCoarseToFineOutput",
    "FlexTokStreamOutput",
    "FlexTokAutoBudgetOutput",
    "FlexTokTokenizePipeline",
    "FlexTokText2ImagePipeline",
    "FlexTokClassToImagePipeline",
]
