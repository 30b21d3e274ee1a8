"""Old import path of the evaluation classifier, kept so that existing code keeps working.

The model lives in `flextok_hf.modeling_flextok_classifier`; its training in `flextok_hf.training.classifier`.
"""

from ..modeling_flextok_classifier import (
    DEFAULT_CLASSIFIER_RESOURCE,
    ClassifierFeatureNetwork,
    FlexTokClassifierConfig,
    FlexTokClassifierPreTrainedModel,
    FlexTokClassifierStage,
    FlexTokImageClassifier,
    augment_images,
    count_parameters,
    default_classifier_path,
    joint_label_names,
    load_default_classifier,
    pad_to_size,
)

__all__ = [
    "DEFAULT_CLASSIFIER_RESOURCE",
    "ClassifierFeatureNetwork",
    "FlexTokClassifierConfig",
    "FlexTokClassifierPreTrainedModel",
    "FlexTokClassifierStage",
    "FlexTokImageClassifier",
    "augment_images",
    "count_parameters",
    "default_classifier_path",
    "joint_label_names",
    "load_default_classifier",
    "pad_to_size",
]
