"""REPA teachers: frozen image encoders whose patch features an intermediate decoder layer is aligned to.

REPA (representation alignment) adds `repa_loss_weight * (-cos(proj(h_l), f))` to the rectified-flow loss, where
`h_l` are the decoder's patch tokens after block `config.repa_layer`, `proj` the model's 3-layer MLP
(`FlexTokModel.repa_projector`) and `f` the teacher's patch features of the clean image, resized to the decoder's
patch grid (`FlexTokModel.repa_loss`). FlexTok uses DINOv2-L; offline, any transformers ViT-style encoder or the
project's small classifier can serve as the teacher.

```python
teacher = REPATeacher("path/to/dinov2")          # or a ViTModel / Dinov2Model instance, or "flextok_classifier"
features = teacher(pixel_values)                 # [B, 3, H, W] in [-1, 1] -> [B, N', F] patch features
config = FlexTokConfig.tiny(repa_layer=1, repa_feature_dim=teacher.feature_dim)
loss = FlexTokModel(config)(pixel_values, repa_target=features).loss
```

The teacher lives outside the FlexTok model (the trainer holds it), so it never enters a saved state dict.
"""

from __future__ import annotations

import inspect
import json
import os

import torch
import torch.nn.functional as F
from torch import nn

# ImageNet statistics: what DINOv2 and most ViTs expect when no image processor says otherwise.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSIFIER_TEACHER_NAME = "flextok_classifier"


def default_repa_layer(config) -> int:
    """The config's REPA layer if set, else decoder block 1 (FlexTok's choice), or block 0 for one-block decoders."""
    if config.repa_layer is not None:
        return config.repa_layer
    return min(1, config.decoder_num_layers - 1)


def _is_classifier(module) -> bool:
    from ..modeling_flextok_classifier import FlexTokImageClassifier

    return isinstance(module, FlexTokImageClassifier)


def _load_teacher(name_or_path: str):
    """A teacher module (and its image processor, if any) from a name or a local folder."""
    if name_or_path == CLASSIFIER_TEACHER_NAME:
        from ..modeling_flextok_classifier import load_default_classifier

        return load_default_classifier(), None
    config_file = os.path.join(name_or_path, "config.json")
    if os.path.isfile(config_file):
        with open(config_file) as handle:
            model_type = json.load(handle).get("model_type")
        if model_type == "flextok_classifier":
            from ..modeling_flextok_classifier import FlexTokImageClassifier

            return FlexTokImageClassifier.from_pretrained(name_or_path, use_safetensors=True), None
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(name_or_path)
    processor = None
    if os.path.isfile(os.path.join(name_or_path, "preprocessor_config.json")) or not os.path.isdir(name_or_path):
        try:
            processor = AutoImageProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError):
            processor = None
    return model, processor


def _processor_size(processor) -> int | None:
    """Side of the teacher's input images according to its image processor (crop size first, then size)."""
    for attribute in ("crop_size", "size"):
        if attribute == "crop_size" and getattr(processor, "do_center_crop", True) is False:
            continue
        size = getattr(processor, attribute, None)
        if isinstance(size, int):
            return size
        for key in ("height", "shortest_edge"):
            value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
            if value:
                return int(value)
    return None


class REPATeacher(nn.Module):
    """A frozen vision encoder giving patch features `[B, N', F]` of images `[B, C, H, W]` in [-1, 1].

    Args:
        model_name_or_path_or_module: a local folder loadable with `transformers.AutoModel` (ViT, DINOv2, DINOv2 with
            registers, DeiT, ... — anything whose config has `image_size`, `patch_size`, `hidden_size` and whose
            output has `last_hidden_state` / `hidden_states`), such a model instance, `"flextok_classifier"` (the
            shipped classifier, `flextok_hf.modeling_flextok_classifier.load_default_classifier()`), a classifier folder or a
            [`FlexTokImageClassifier`] instance.
        image_size: side the images are resized to before the teacher (default: the image processor's crop size,
            else the model config's `image_size`). For ViTs the grid is `image_size // patch_size`.
        layer: which features. Transformers: `-1` or `"last_hidden_state"` = the final (normed) output, an int
            `l >= 0` = `hidden_states[l]` (0 = the embeddings). Classifier: the stage whose feature map (before
            global pooling) is used, `-1` = the last stage.
        image_mean / image_std: normalization after mapping to [0, 1] (default: the image processor's, else ImageNet
            statistics). The classifier takes [-1, 1] images and ignores them.

    Leading tokens that are not patches (CLS, distillation, registers: `seq_len - grid**2` of them) are dropped.
    The teacher is frozen (`requires_grad=False`), always in eval mode and runs under `torch.no_grad()`.
    """

    def __init__(
        self,
        model_name_or_path_or_module,
        image_size: int | None = None,
        layer: int | str = -1,
        image_mean=None,
        image_std=None,
    ):
        super().__init__()
        processor = None
        if isinstance(model_name_or_path_or_module, (str, os.PathLike)):
            model, processor = _load_teacher(os.fspath(model_name_or_path_or_module))
        elif isinstance(model_name_or_path_or_module, nn.Module):
            model = model_name_or_path_or_module
        else:
            raise TypeError(
                "`model_name_or_path_or_module` must be a path, 'flextok_classifier' or an nn.Module, got "
                f"{type(model_name_or_path_or_module).__name__}."
            )
        if layer == "last_hidden_state":
            layer = -1
        if not isinstance(layer, int) or isinstance(layer, bool) or layer < -1:
            raise ValueError(f"`layer` must be -1, 'last_hidden_state' or an int >= 0, got {layer!r}.")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"`image_size` must be a positive int or None, got {image_size!r}.")
        self.model = model
        self.layer = layer
        self.is_classifier = _is_classifier(model)
        config = model.config
        if self.is_classifier:
            num_stages = len(config.widths)
            if layer >= num_stages:
                raise ValueError(f"`layer` must be -1 or in [0, {num_stages}) for the classifier, got {layer}.")
            self.stage = num_stages - 1 if layer == -1 else layer
            self.feature_dim = int(config.widths[self.stage])
            self.image_size = image_size or int(config.image_size)
            self.patch_size = 2 ** (self.stage + 1)
        else:
            missing = [name for name in ("image_size", "patch_size", "hidden_size") if not hasattr(config, name)]
            if missing:
                raise ValueError(
                    f"The teacher's config ({type(config).__name__}) lacks {missing}; a ViT-style encoder is needed."
                )
            if layer > getattr(config, "num_hidden_layers", layer):
                raise ValueError(f"`layer` must be <= num_hidden_layers={config.num_hidden_layers}, got {layer}.")
            patch = config.patch_size
            self.patch_size = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
            default_size = _processor_size(processor) if processor is not None else None
            config_size = config.image_size[0] if isinstance(config.image_size, (list, tuple)) else config.image_size
            self.image_size = image_size or default_size or int(config_size)
            self.feature_dim = int(config.hidden_size)
            self.config_image_size = int(config_size)
            # ViT/DeiT need `interpolate_pos_encoding=True` off their pretraining size; DINOv2 always interpolates.
            self._accepts_interpolation = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        if self.image_size % self.patch_size:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be a multiple of the teacher's patch size ({self.patch_size})."
            )
        mean = image_mean if image_mean is not None else getattr(processor, "image_mean", None) or IMAGENET_MEAN
        std = image_std if image_std is not None else getattr(processor, "image_std", None) or IMAGENET_STD
        self.register_buffer("image_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.model.requires_grad_(False)
        self.eval()

    @property
    def grid_size(self) -> int:
        """Side of the teacher's patch-feature grid."""
        return self.image_size // self.patch_size

    def train(self, mode: bool = True):
        """The teacher stays in eval mode (no dropout, frozen BatchNorm statistics)."""
        return super().train(False)

    def preprocess(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, 1 or 3, H, W]` in [-1, 1] -> the teacher's input `[B, 3, S, S]` (resized; normalized for ViTs)."""
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or pixel_values.shape[1] not in (1, 3):
            shape = (
                tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            )
            raise ValueError(f"`pixel_values` must be [B, 1 or 3, H, W] in [-1, 1], got {shape}.")
        images = pixel_values.float()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        size = self.image_size
        if tuple(images.shape[-2:]) != (size, size):
            shrink = images.shape[-1] > size or images.shape[-2] > size
            images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=shrink)
            images = images.clamp(-1, 1)
        if self.is_classifier:
            return images
        images = (images + 1) / 2
        return (images - self.image_mean.to(images.device)) / self.image_std.to(images.device)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images `[B, C, H, W]` in [-1, 1] -> patch features `[B, grid**2, feature_dim]` (float32)."""
        dtype = next(self.model.parameters()).dtype
        images = self.preprocess(pixel_values).to(dtype)
        if self.is_classifier:
            hidden_states = images
            for stage in self.model.stages[: self.stage + 1]:
                hidden_states = stage(hidden_states)
            return hidden_states.flatten(2).transpose(1, 2).float()
        kwargs = {"output_hidden_states": self.layer >= 0}
        if self.image_size != self.config_image_size and self._accepts_interpolation:
            kwargs["interpolate_pos_encoding"] = True
        outputs = self.model(pixel_values=images, **kwargs)
        tokens = outputs.last_hidden_state if self.layer < 0 else outputs.hidden_states[self.layer]
        num_prefix = tokens.shape[1] - self.grid_size**2
        if num_prefix < 0:
            raise ValueError(
                f"The teacher returned {tokens.shape[1]} tokens, fewer than its {self.grid_size}x{self.grid_size} "
                "patch grid."
            )
        return tokens[:, num_prefix:].float()


__all__ = ["CLASSIFIER_TEACHER_NAME", "IMAGENET_MEAN", "IMAGENET_STD", "REPATeacher", "default_repa_layer"]
