"""Image-reconstruction metrics as plain torch functions.

Everything here works on batched float images `[B, C, H, W]` on any device and in any floating
dtype; the arithmetic runs in at least float32 (float64 inputs stay float64). Images in the
package's convention lie in [-1, 1], hence `data_range=2.0` by default; pass `data_range=1.0` for
[0, 1] images or `255.0` for uint8-range images.

- `psnr`, `mae`, `ssim`: per-image scores `[B]` (or their mean with `reduction="mean"`).
- `frechet_distance`: the closed-form Fréchet distance between two Gaussians.
- `FeatureStatistics`: streaming float64 mean/covariance of feature vectors, mergeable.
- `FrechetDistance`: streaming Fréchet distance over a pluggable feature network, reported as
  `fd_<name>`. It is only an "FID" when the network is Inception-v3 with the FID weights; this
  package never labels any other network's score as FID.

The `evaluate` wrappers in `flextok_hf/metrics/<name>/<name>.py` call these functions, and a
Trainer's `compute_metrics` can call them directly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

PSNR_MAX_DB = 100.0
"""Default PSNR cap: identical images (MSE = 0) score 100 dB instead of `inf`, so means stay finite."""

_REDUCTIONS = ("none", "mean")


def _check_images(pred: torch.Tensor, ref: torch.Tensor) -> None:
    for arg, value in (("pred", pred), ("ref", ref)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"`{arg}` must be a torch.Tensor of shape [B, C, H, W], got {type(value).__name__}.")
        if value.ndim != 4:
            raise ValueError(f"`{arg}` must have shape [B, C, H, W], got shape {tuple(value.shape)}.")
    if pred.shape != ref.shape:
        raise ValueError(f"`pred` and `ref` must have the same shape, got {tuple(pred.shape)} and {tuple(ref.shape)}.")


def _check_data_range(data_range: float) -> None:
    if not isinstance(data_range, (int, float)) or isinstance(data_range, bool) or not data_range > 0:
        raise ValueError(f"`data_range` must be a positive number, got {data_range!r}.")


def _compute_dtype(pred: torch.Tensor, ref: torch.Tensor) -> torch.dtype:
    dtype = torch.promote_types(pred.dtype, ref.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    return torch.promote_types(dtype, torch.float32)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}.")


def psnr(
    pred: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 2.0,
    reduction: str = "none",
    max_psnr: float | None = PSNR_MAX_DB,
) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, `10 log10(data_range² / MSE)` in dB.

    Args:
        pred, ref: `[B, C, H, W]` images.
        data_range: max - min of the pixel range (2.0 for [-1, 1]).
        reduction: `"none"` → `[B]`; `"mean"` → scalar mean of the per-image PSNRs.
        max_psnr: cap in dB (default `PSNR_MAX_DB` = 100), so identical images give 100 instead
            of `inf`. `None` disables the cap (identical images then give `inf`).
    """
    _check_images(pred, ref)
    _check_data_range(data_range)
    if max_psnr is not None and not (isinstance(max_psnr, (int, float)) and max_psnr > 0):
        raise ValueError(f"`max_psnr` must be a positive number or None, got {max_psnr!r}.")
    dtype = _compute_dtype(pred, ref)
    mse = (pred.to(dtype) - ref.to(dtype)).square().flatten(1).mean(dim=1)
    values = 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 gives +inf
    if max_psnr is not None:
        values = values.clamp(max=max_psnr)
    return _reduce(values, reduction)


def mae(pred: torch.Tensor, ref: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Mean absolute error per image, in pixel units: `[B]` (or the scalar mean with `reduction="mean"`)."""
    _check_images(pred, ref)
    dtype = _compute_dtype(pred, ref)
    values = (pred.to(dtype) - ref.to(dtype)).abs().flatten(1).mean(dim=1)
    return _reduce(values, reduction)


def _ssim_window_1d(win_size: int, gaussian: bool, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    """1-D weights `[win_size]` summing to 1: a sampled Gaussian of std `sigma`, or a box filter."""
    if not gaussian:
        return torch.full((win_size,), 1.0 / win_size, dtype=dtype, device=device)
    x = torch.arange(win_size, dtype=torch.float64) - (win_size - 1) / 2
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def ssim(
    pred: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 2.0,
    win_size: int = 11,
    gaussian: bool = True,
    sigma: float = 1.5,
    use_sample_covariance: bool = False,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "none",
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over channels and positions.

    Local statistics use a separable `win_size × win_size` window: a Gaussian of std `sigma`
    (default, the paper's 11×11, σ = 1.5) or a uniform box (`gaussian=False`). Only positions whose
    window lies fully inside the image count (no padding), `C1 = (k1 R)²`, `C2 = (k2 R)²`.

    Matches `skimage.metrics.structural_similarity(x, y, data_range=R, channel_axis=0, ...)` with
    `gaussian_weights=True, sigma=1.5, use_sample_covariance=False` (skimage's Gaussian window is
    `2 * int(3.5 * sigma + 0.5) + 1` = 11 taps for σ = 1.5), or with `gaussian_weights=False,
    win_size=w` and the same `use_sample_covariance`.

    Args:
        pred, ref: `[B, C, H, W]` images with `H, W >= win_size`.
        use_sample_covariance: scale (co)variances by `N / (N - 1)`, `N = win_size²` (skimage's default;
            the paper uses population statistics, `False`).
    Returns:
        `[B]` SSIM in [-1, 1] (1 for identical images), or the scalar mean with `reduction="mean"`.
    """
    _check_images(pred, ref)
    _check_data_range(data_range)
    if not isinstance(win_size, int) or isinstance(win_size, bool) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"`win_size` must be an odd integer >= 3, got {win_size!r}.")
    height, width = pred.shape[-2:]
    if win_size > min(height, width):
        raise ValueError(f"`win_size` ({win_size}) exceeds the image size {height}x{width}; use a smaller odd window.")
    if gaussian and not sigma > 0:
        raise ValueError(f"`sigma` must be positive, got {sigma!r}.")

    batch, channels = pred.shape[:2]
    dtype = _compute_dtype(pred, ref)
    x = pred.to(dtype).reshape(batch * channels, 1, height, width)
    y = ref.to(dtype).reshape(batch * channels, 1, height, width)

    # Local means of x, y, x², y², xy in one separable "valid" convolution.
    window = _ssim_window_1d(win_size, gaussian, sigma, dtype, x.device)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=0)
    maps = nn.functional.conv2d(maps, window.view(1, 1, win_size, 1))
    maps = nn.functional.conv2d(maps, window.view(1, 1, 1, win_size))
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = maps.chunk(5, dim=0)

    cov_norm = win_size**2 / (win_size**2 - 1) if use_sample_covariance else 1.0
    var_x = cov_norm * (mu_xx - mu_x * mu_x)
    var_y = cov_norm * (mu_yy - mu_y * mu_y)
    cov_xy = cov_norm * (mu_xy - mu_x * mu_y)

    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    values = ssim_map.reshape(batch, -1).mean(dim=1)  # every channel map has the same size
    return _reduce(values, reduction)


def _as_float64(value, arg: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`{arg}` must be a numeric array or tensor, got {type(value).__name__}.") from error


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clipped to 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein²) distance between `N(mu1, sigma1)` and `N(mu2, sigma2)`.

    `||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})`, in float64. The trace of the
    matrix square root is `Σ sqrt(λ_i)` over the eigenvalues of the symmetric PSD matrix
    `sigma1^{1/2} sigma2 sigma1^{1/2}`, which has the same spectrum as `sigma1 sigma2`; this avoids
    the complex round-off of `scipy.linalg.sqrtm` on near-singular covariances. Equal inputs give 0
    up to float64 round-off (about 1e-15 * trace); negative round-off is clipped to 0.

    Args:
        mu1, mu2: means `[D]` (numpy arrays or tensors).
        sigma1, sigma2: covariances `[D, D]`.
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"`mu1` and `mu2` must both have shape [D], got {mu1.shape} and {mu2.shape}.")
    dim = mu1.shape[0]
    for arg, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"`{arg}` must have shape [D, D] = ({dim}, {dim}), got {sigma.shape}.")
    sqrt_sigma1 = _sqrt_psd(sigma1)
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return max(float(value), 0.0)  # the distance is >= 0; clip negative round-off


class FeatureStatistics:
    """Streaming mean and covariance of feature vectors, accumulated in float64.

    Batches are merged with the pairwise update of Chan et al. (count, mean, and the sum of
    squared deviations `M2`), which stays accurate when features have a large mean. Accumulators
    from different shards merge with `merge` (e.g. after gathering across processes).

    `covariance` is the unbiased sample covariance (`ddof=1`), like `np.cov(features, rowvar=False)`.

    Args:
        device: where to accumulate; default the device of the first batch (CPU for MPS, which
            has no float64).
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = None if device is None else torch.device(device)
        self.count = 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def _merge_moments(self, count: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        if self._mean is None:
            self.count, self._mean, self._m2 = count, mean, m2
            return
        if mean.shape != self._mean.shape:
            raise ValueError(f"feature dimension changed: accumulated D={self._mean.shape[0]}, got D={mean.shape[0]}.")
        total = self.count + count
        delta = mean - self._mean
        self._mean = self._mean + delta * (count / total)
        self._m2 = self._m2 + m2 + torch.outer(delta, delta) * (self.count * count / total)
        self.count = total

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> FeatureStatistics:
        """Add a batch of features `[N, D]` (tensor or array). Returns `self`."""
        if not isinstance(features, torch.Tensor):
            features = torch.as_tensor(np.asarray(features))
        if features.ndim != 2 or features.shape[0] == 0:
            raise ValueError(f"`features` must have shape [N, D] with N >= 1, got {tuple(features.shape)}.")
        if self.device is None:
            self.device = features.device if features.device.type != "mps" else torch.device("cpu")
        features = features.detach().to(self.device, torch.float64)
        mean = features.mean(dim=0)
        centered = features - mean
        self._merge_moments(features.shape[0], mean, centered.T @ centered)
        return self

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """Fold the statistics of `other` into this accumulator (in place). Returns `self`."""
        if not isinstance(other, FeatureStatistics):
            raise TypeError(f"`other` must be a FeatureStatistics, got {type(other).__name__}.")
        if other.count == 0:
            return self
        if self.device is None:
            self.device = other.device
        self._merge_moments(other.count, other._mean.to(self.device), other._m2.to(self.device))
        return self

    def reset(self) -> None:
        self.count, self._mean, self._m2 = 0, None, None

    @property
    def mean(self) -> torch.Tensor:
        """Mean feature `[D]` (float64)."""
        if self.count == 0:
            raise ValueError("FeatureStatistics is empty: call `update(features)` first.")
        return self._mean

    @property
    def covariance(self) -> torch.Tensor:
        """Unbiased covariance `[D, D]` (float64, `ddof=1`); needs at least 2 samples."""
        if self.count < 2:
            raise ValueError(f"covariance needs at least 2 samples, got count={self.count}.")
        return self._m2 / (self.count - 1)


class FrechetDistance:
    """Streaming Fréchet distance between real and generated images in a feature network's space.

    `update(images, real=True)` for reference images, `update(images, real=False)` for generated or
    reconstructed ones, then `compute()` → `{f"fd_{name}": value}`. The network's name is part of
    the key because the number only means something for a given network: with Inception-v3 and the
    FID weights this is FID (name it e.g. `"inception"`); with anything else (a small classifier
    trained in this project, a DINO model, ...) it is *not* FID and must not be reported as such.

    Feature-network contract: an `nn.Module` mapping images `[B, C, H, W]` in [-1, 1] to features
    `[B, D]`. It is put in eval mode and run under `torch.no_grad()`; images are moved to the
    network's device and dtype. To use a classifier, return its penultimate activations (the
    input of the last linear layer), e.g. replace the head with `nn.Identity()`, or wrap it in
    `LayerFeatures(classifier, "fc1")`; resize/normalise inside the module if the network expects
    another resolution or range.
    """

    def __init__(self, feature_network: nn.Module, name: str):
        if not isinstance(feature_network, nn.Module):
            raise TypeError(f"`feature_network` must be a torch.nn.Module, got {type(feature_network).__name__}.")
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"`name` must be a non-empty string without whitespace, got {name!r}.")
        self.feature_network = feature_network.eval()
        self.name = name
        self.real = FeatureStatistics()
        self.generated = FeatureStatistics()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Run the feature network: images `[B, C, H, W]` → features `[B, D]`."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"`images` must be a tensor of shape [B, C, H, W], got {shape}.")
        parameter = next(self.feature_network.parameters(), None)
        if parameter is not None:
            images = images.to(device=parameter.device, dtype=parameter.dtype)
        features = self.feature_network(images)
        if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != images.shape[0]:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(
                f"the feature network must return a tensor of shape [B, D] = [{images.shape[0]}, D], got {shape}."
            )
        return features

    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add images `[B, C, H, W]` in [-1, 1]: `real=True` for references, `False` for generated."""
        self.update_features(self.features(images), real=real)

    def update_features(self, features: torch.Tensor, real: bool) -> None:
        """Add precomputed features `[B, D]` (from the same network)."""
        if not isinstance(real, bool):
            raise TypeError(f"`real` must be a bool, got {real!r}.")
        (self.real if real else self.generated).update(features)

    def reset(self) -> None:
        self.real.reset()
        self.generated.reset()

    def compute(self) -> dict[str, float]:
        """`{f"fd_{name}": Fréchet distance}`; both sides need at least 2 images."""
        if self.real.count < 2 or self.generated.count < 2:
            raise ValueError(
                f"compute() needs at least 2 real and 2 generated images, got {self.real.count} real and "
                f"{self.generated.count} generated."
            )
        value = frechet_distance(self.generated.mean, self.generated.covariance, self.real.mean, self.real.covariance)
        return {f"fd_{self.name}": value}


class LayerFeatures(nn.Module):
    """Adapt a network into a feature network: run it and return one submodule's output `[B, D]`.

    `LayerFeatures(classifier, "fc1")` returns the activations leaving `classifier.fc1` (flattened
    to `[B, D]`); pick the layer feeding the classification head for penultimate features.
    """

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.model = model
        self.layer = layer
        names = dict(model.named_modules())
        if layer not in names or layer == "":
            allowed = [n for n in names if n][:20]
            raise ValueError(f"`layer` {layer!r} is not a submodule of the model; some options: {allowed}.")
        self._captured: torch.Tensor | None = None
        self._hook = names[layer].register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        self._captured = output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._captured = None
        self.model(images)
        features, self._captured = self._captured, None
        if not isinstance(features, torch.Tensor):
            raise ValueError(f"layer {self.layer!r} did not produce a tensor output.")
        return features.flatten(1)


def score_image_pairs(metric_fn, predictions, references, **kwargs) -> np.ndarray:
    """Apply a batched image metric to lists of single images `[C, H, W]` that may differ in size.

    Each prediction is compared with the reference at the same index (same shape required);
    images of equal shape are stacked into one batch and scored in float64 on the CPU. Used by the
    `evaluate` wrappers, whose inputs arrive as per-image nested lists.

    Args:
        metric_fn: e.g. `psnr`, `mae` or `ssim`, returning `[B]` scores.
        predictions, references: sequences of `[C, H, W]` arrays, tensors or nested lists.
        kwargs: forwarded to `metric_fn`.
    Returns:
        float64 array `[N]` of per-image scores, in input order.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` and `references` must have the same length, got {len(predictions)} and {len(references)}."
        )
    groups: dict[tuple[int, ...], list[int]] = {}
    pairs = []
    for index, (pred, ref) in enumerate(zip(predictions, references)):
        pred = torch.as_tensor(np.asarray(pred, dtype=np.float64))
        ref = torch.as_tensor(np.asarray(ref, dtype=np.float64))
        if pred.ndim != 3 or pred.shape != ref.shape:
            raise ValueError(
                f"image pair {index} must be two [C, H, W] arrays of equal shape, got {tuple(pred.shape)} and "
                f"{tuple(ref.shape)}."
            )
        groups.setdefault(tuple(pred.shape), []).append(index)
        pairs.append((pred, ref))
    scores = np.empty(len(pairs), dtype=np.float64)
    for indices in groups.values():
        pred = torch.stack([pairs[i][0] for i in indices])
        ref = torch.stack([pairs[i][1] for i in indices])
        scores[indices] = metric_fn(pred, ref, reduction="none", **kwargs).double().numpy()
    return scores
