"""A small CNN image classifier: the offline feature network for Fréchet distances and a quality bar.

No Inception, DINOv2 or CLIP weights are available offline, so reconstruction quality is measured with this
classifier instead: its penultimate features give a Fréchet distance reported as `fd_<feature_network_name>` (never
"FID"), and its predictions on reconstructions give a recognisability score (`recon_accuracy`).

The shipped weights (`load_default_classifier()`) solve MNIST and Animal-MNIST as one 20-class problem at 32x32
(labels "digit 0".."digit 9", then the ten animal names); `src/flextok_hf/pretrained/classifier/README.md` states how
they were trained and how accurate they are. `flextok-hf train-classifier` (`flextok_hf.training.classifier`)
retrains them.

Input convention: `pixel_values` `[B, 3, S, S]` in [-1, 1] with `S = config.image_size`, prepared like
`FlexTokImageProcessor` does (RGB, bicubic resize, scale to [-1, 1]). `forward` and `features` do *not* resize: callers
resize, or use `classify` / `resize` / `ClassifierFeatureNetwork`, which resize with `torch.nn.functional.interpolate`.
"""

from __future__ import annotations

import importlib.resources
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

DEFAULT_CLASSIFIER_RESOURCE = ("pretrained", "classifier")

# How a dataset's label name becomes a label of a joint classifier: digit sets share the names "digit 0".."digit 9".
_LABEL_TEMPLATES = {"mnist": "digit {}", "digits": "digit {}"}


class FlexTokClassifierConfig(PreTrainedConfig):
    r"""
    Configuration of a [`FlexTokImageClassifier`]: `len(widths)` stages of (3x3 conv, BatchNorm, ReLU) x
    `layers_per_stage` followed by 2x2 max pooling; the final map is flattened (keeping where things are, which matters
    for silhouettes) and projected to `hidden_size` features (Linear + ReLU), then a linear head.

    Args:
        image_size (`int`): side of the square input images; inputs of another size must be resized by the caller.
        num_channels (`int`): input channels (3; gray images are repeated over RGB).
        widths (`list[int]`): channels of each stage.
        layers_per_stage (`int`): conv layers per stage.
        hidden_size (`int`): dimension of the penultimate features (the Fréchet-distance space).
        dropout (`float`): dropout on the features before the head (training only).
        augment_max_shift (`float`): in training mode `forward` shifts each image by up to this many pixels per axis
            (uniform, bilinear, border replicated), so that the classifier tolerates imperfect reconstructions.
        augment_min_scale (`float`): ... and scales its content by a factor uniform in `[augment_min_scale, 1]`
            (0.875 covers a 28-px digit either resized to 32 or padded to 32). 1 disables scaling.
        augment_flip_label_ids (`list[int]`, *optional*): classes whose images are mirrored left-right with
            probability 1/2 in training (animal silhouettes face either way; digits must not be mirrored).
        dataset_name (`str`): what it was trained on; the Fréchet-distance key is `fd_flextok_classifier_<name>`.
        id2label (`dict[int, str]`): class names (sets `num_labels`).
    """

    model_type = "flextok_classifier"

    image_size: int = 32
    num_channels: int = 3
    widths: list[int] | None = None
    layers_per_stage: int = 2
    hidden_size: int = 128
    dropout: float = 0.1
    augment_max_shift: float = 2.0
    augment_min_scale: float = 0.875
    augment_flip_label_ids: list[int] | None = None
    dataset_name: str = "custom"

    def __post_init__(self, **kwargs):
        if self.widths is None:
            self.widths = [32, 64, 128]
        if not isinstance(self.widths, (list, tuple)) or not self.widths:
            raise ValueError(f"`widths` must be a non-empty list of positive ints, got {self.widths!r}.")
        self.widths = [int(width) for width in self.widths]
        for name in ("image_size", "num_channels", "layers_per_stage", "hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if min(self.widths) < 1:
            raise ValueError(f"`widths` must hold positive ints, got {self.widths}.")
        if self.image_size % 2 ** len(self.widths) != 0:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be divisible by 2**len(widths) = {2 ** len(self.widths)} "
                "(each stage halves the resolution)."
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}.")
        if self.augment_max_shift < 0:
            raise ValueError(f"`augment_max_shift` must be >= 0 pixels, got {self.augment_max_shift!r}.")
        self.augment_flip_label_ids = [int(i) for i in self.augment_flip_label_ids or []]
        if not 0 < self.augment_min_scale <= 1:
            raise ValueError(f"`augment_min_scale` must be in (0, 1], got {self.augment_min_scale!r}.")
        if (
            not isinstance(self.dataset_name, str)
            or not self.dataset_name
            or any(c.isspace() for c in self.dataset_name)
        ):
            raise ValueError(
                f"`dataset_name` must be a non-empty string without whitespace, got {self.dataset_name!r}."
            )
        super().__post_init__(**kwargs)


class FlexTokClassifierStage(nn.Module):
    """`layers` x (3x3 conv, BatchNorm, ReLU), then 2x2 max pooling: `[B, C_in, H, W]` -> `[B, C_out, H/2, W/2]`."""

    def __init__(self, in_channels: int, out_channels: int, layers: int):
        super().__init__()
        modules = []
        for index in range(layers):
            modules += [
                nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
        self.layers = nn.Sequential(*modules)
        self.pool = nn.MaxPool2d(2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(hidden_states))


def augment_images(
    pixel_values: torch.Tensor,
    max_shift: float,
    min_scale: float,
    flippable: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Shift each image `[B, C, H, W]` by up to `max_shift` pixels per axis, scale its content by a factor in
    `[min_scale, 1]` and, where `flippable` `[B]` (bool) is set, mirror it left-right with probability 1/2. Uniform
    draws from `generator`; bilinear resampling with replicated borders."""
    batch, _, height, width = pixel_values.shape
    device, dtype = pixel_values.device, pixel_values.dtype
    draws = torch.rand(batch, 4, generator=generator, device=generator.device if generator else device)
    draws = draws.to(device=device, dtype=torch.float32)
    scale = min_scale + (1 - min_scale) * draws[:, 0]
    flip = torch.ones(batch, device=device)
    if flippable is not None:
        flip = torch.where(flippable.to(device) & (draws[:, 3] < 0.5), -1.0, 1.0)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size.
    shift_x = (2 * draws[:, 1] - 1) * max_shift * 2 / width
    shift_y = (2 * draws[:, 2] - 1) * max_shift * 2 / height
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0] = flip / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, 0, 2] = shift_x
    theta[:, 1, 2] = shift_y
    grid = F.affine_grid(theta, list(pixel_values.shape), align_corners=False)
    resampled = F.grid_sample(pixel_values.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return resampled.to(dtype)


class FlexTokClassifierPreTrainedModel(PreTrainedModel):
    config_class = FlexTokClassifierConfig
    base_model_prefix = "flextok_classifier"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module):
        """He init for convs and the projection, small normal for the head, identity BatchNorm."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if module is getattr(self, "classifier", None):
                init.normal_(module.weight, std=0.01)
            else:
                init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)


class FlexTokImageClassifier(FlexTokClassifierPreTrainedModel):
    """Small CNN classifier of `[B, 3, S, S]` images in [-1, 1]; `features` gives the penultimate `[B, hidden_size]`."""

    def __init__(self, config: FlexTokClassifierConfig):
        super().__init__(config)
        channels = [config.num_channels, *config.widths]
        self.stages = nn.ModuleList(
            FlexTokClassifierStage(channels[i], channels[i + 1], config.layers_per_stage)
            for i in range(len(config.widths))
        )
        final_side = config.image_size // 2 ** len(config.widths)
        self.projection = nn.Linear(config.widths[-1] * final_side**2, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @property
    def feature_network_name(self) -> str:
        """Name used in Fréchet-distance keys: `fd_<feature_network_name>`."""
        return f"flextok_classifier_{self.config.dataset_name}"

    @property
    def feature_dim(self) -> int:
        return self.config.hidden_size

    def _check_pixel_values(self, pixel_values) -> torch.Tensor:
        size, channels = self.config.image_size, self.config.num_channels
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
            raise TypeError(
                f"`pixel_values` must be a float torch.Tensor in [-1, 1], got {type(pixel_values).__name__}."
            )
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (channels, size, size):
            raise ValueError(
                f"`pixel_values` must have shape [B, {channels}, {size}, {size}], got {tuple(pixel_values.shape)}; "
                "resize first (`classifier.resize(images)`) or use `classifier.classify(images)`."
            )
        return pixel_values

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Penultimate features: images `[B, 3, S, S]` in [-1, 1] -> `[B, hidden_size]` (after the ReLU)."""
        hidden_states = self._check_pixel_values(pixel_values).to(self.classifier.weight.dtype)
        for stage in self.stages:
            hidden_states = stage(hidden_states)
        return F.relu(self.projection(hidden_states.flatten(1)))

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.LongTensor | None = None, **kwargs
    ) -> ImageClassifierOutput:
        """Images `[B, 3, S, S]` -> logits `[B, num_labels]`; cross-entropy `loss` when `labels` `[B]` are given.

        In training mode the images are augmented first (global RNG; see the config's `augment_*` fields)."""
        config = self.config
        flippable = None
        if self.training and labels is not None and config.augment_flip_label_ids:
            flippable = torch.isin(labels, torch.tensor(config.augment_flip_label_ids, device=labels.device))
        if self.training and (config.augment_max_shift > 0 or config.augment_min_scale < 1 or flippable is not None):
            pixel_values = augment_images(
                self._check_pixel_values(pixel_values), config.augment_max_shift, config.augment_min_scale, flippable
            )
        logits = self.classifier(self.dropout(self.features(pixel_values)))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device).long())
        return ImageClassifierOutput(loss=loss, logits=logits)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Images `[B, 1 or 3, H, W]` in [-1, 1] -> `[B, 3, S, S]` on the classifier's device and dtype (gray images
        repeated over RGB; bilinear `interpolate`, antialiased when shrinking)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"`images` must be a tensor of shape [B, 1 or 3, H, W] in [-1, 1], got {shape}.")
        images = images.to(device=self.classifier.weight.device, dtype=self.classifier.weight.dtype)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        size = self.config.image_size
        if tuple(images.shape[-2:]) != (size, size):
            shrink = images.shape[-1] > size or images.shape[-2] > size
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        return images

    @torch.no_grad()
    def classify(self, images: torch.Tensor, return_logits: bool = False) -> torch.Tensor:
        """Images `[B, 1 or 3, H, W]` in [-1, 1] of any size -> predicted label ids `[B]` (or logits
        `[B, num_labels]`), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            logits = self(self.resize(images)).logits
        finally:
            self.train(was_training)
        return logits if return_logits else logits.argmax(dim=-1)

    def label_ids_for(self, label_names) -> list[int] | None:
        """Map a dataset's class names to this classifier's label ids (`"3"` -> `"digit 3"` when needed); `None`
        if any name is unknown."""
        label2id = {str(name): int(index) for index, name in self.config.id2label.items()}
        mapped = []
        for name in label_names:
            for candidate in (str(name), f"digit {name}"):
                if candidate in label2id:
                    mapped.append(label2id[candidate])
                    break
            else:
                return None
        return mapped


class ClassifierFeatureNetwork(nn.Module):
    """Feature network for `flextok_hf.metrics.FrechetDistance`: images `[B, C, H, W]` in [-1, 1] of any size ->
    the classifier's penultimate features `[B, D]` (resized inside). `feature_network_name` names the FD key."""

    def __init__(self, classifier: FlexTokImageClassifier):
        super().__init__()
        self.classifier = classifier
        self.feature_network_name = classifier.feature_network_name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(self.classifier.resize(images))


def joint_label_names(dataset_label_names: dict[str, list[str]]) -> list[str]:
    """Class names of one classifier over several datasets, in order, merging equal names.

    `{"mnist": ["0", ..., "9"], "animal_mnist": ["bear", ...]}` -> `["digit 0", ..., "digit 9", "bear", ...]`."""
    names = []
    for dataset, labels in dataset_label_names.items():
        template = _LABEL_TEMPLATES.get(dataset, "{}")
        for label in labels:
            name = template.format(label)
            if name not in names:
                names.append(name)
    return names


def pad_to_size(pixel_values: torch.Tensor, size: int) -> torch.Tensor:
    """Center smaller images `[B, C, h, w]` on a `size` x `size` canvas, replicating their borders."""
    height, width = pixel_values.shape[-2:]
    if height > size or width > size:
        raise ValueError(f"`pixel_values` of size {height}x{width} does not fit into {size}x{size}.")
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(pixel_values, (left, size - width - left, top, size - height - top), mode="replicate")


def default_classifier_path():
    """`importlib.resources` handle of the shipped classifier folder (config.json + model.safetensors + README.md)."""
    return importlib.resources.files("flextok_hf").joinpath(*DEFAULT_CLASSIFIER_RESOURCE)


def load_default_classifier(device: torch.device | str | None = None) -> FlexTokImageClassifier:
    """The shipped MNIST + Animal-MNIST classifier (20 classes, 32x32), loaded offline from package data, in eval mode."""
    resource = default_classifier_path()
    with importlib.resources.as_file(resource) as path:
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"The shipped classifier weights are missing from {path}; reinstall flextok_hf or retrain them with "
                "`flextok-hf train-classifier --output_dir <dir>`."
            )
        model = FlexTokImageClassifier.from_pretrained(str(path), use_safetensors=True)
    if device is not None:
        model = model.to(device)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())


__all__ = [
    "ClassifierFeatureNetwork",
    "FlexTokClassifierConfig",
    "FlexTokImageClassifier",
    "augment_images",
    "count_parameters",
    "default_classifier_path",
    "joint_label_names",
    "load_default_classifier",
    "pad_to_size",
]
