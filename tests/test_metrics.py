"""Tests for flextok_hf.metrics: the torch functions and the evaluate modules."""

import math
import os
import re

import numpy as np
import pytest
import scipy.linalg
import skimage.data
import torch
from skimage.metrics import structural_similarity
from torch import nn

import flextok_hf.metrics as metrics
from flextok_hf.metrics import FeatureStatistics, FrechetDistance, LayerFeatures
from flextok_hf.metrics.functional import PSNR_MAX_DB, frechet_distance, mae, psnr, score_image_pairs, ssim


def _uniform(shape, seed, low=-1.0, high=1.0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low).to(dtype)


def _real_images(size=96):
    """Real photographs from scikit-image's bundled data as [N, 3, size, size] in [-1, 1] (float64)."""
    images = []
    for image in (skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()):
        height, width = image.shape[:2]
        step = min(height, width) // size
        crop = image[: size * step : step, : size * step : step]
        images.append(torch.from_numpy(crop.astype(np.float64) / 127.5 - 1.0).permute(2, 0, 1))
    return torch.stack(images)


def _random_spd(dim, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


# ----------------------------------------------------------------------------------------- PSNR / MAE


def test_psnr_identical_images_are_capped():
    x = _uniform((3, 3, 8, 8), seed=0)
    assert torch.equal(psnr(x, x), torch.full((3,), PSNR_MAX_DB, dtype=torch.float64))
    assert PSNR_MAX_DB == 100.0
    assert torch.isinf(psnr(x, x, max_psnr=None)).all()
    assert psnr(x, x, max_psnr=60.0).tolist() == [60.0] * 3
    # the cap keeps a dataset mean finite when one reconstruction is perfect
    y = x.clone()
    y[0] += 0.5
    assert math.isfinite(psnr(y, x, reduction="mean").item())


@pytest.mark.parametrize("c", [0.5, -0.25, 1e-3, 1.5])
def test_psnr_and_mae_of_constant_shift(c):
    # references chosen so that ref + c stays inside [-1, 1]
    ref = _uniform((4, 3, 16, 16), seed=1, low=-1.0 - min(c, 0.0), high=1.0 - max(c, 0.0))
    pred = ref + c
    assert pred.min() >= -1.0 and pred.max() <= 1.0
    expected = 20.0 * math.log10(2.0 / abs(c))
    torch.testing.assert_close(psnr(pred, ref), torch.full((4,), expected, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(mae(pred, ref), torch.full((4,), abs(c), dtype=torch.float64), rtol=1e-9, atol=0)
    # float32 and bfloat16 inputs are scored in float32
    torch.testing.assert_close(psnr(pred.float(), ref.float(), reduction="mean").item(), expected, rtol=1e-5, atol=0)
    assert psnr(pred.bfloat16(), ref.bfloat16()).dtype == torch.float32
    # data_range scales PSNR: [0, 1] images with shift c/2 give the same value
    torch.testing.assert_close(psnr((pred + 1) / 2, (ref + 1) / 2, data_range=1.0), psnr(pred, ref))


def test_psnr_mae_are_per_image_and_reduce():
    ref = _uniform((2, 1, 8, 8), seed=2, low=-0.5, high=0.5)
    pred = ref + torch.tensor([0.1, 0.4], dtype=torch.float64).view(2, 1, 1, 1)
    torch.testing.assert_close(mae(pred, ref), torch.tensor([0.1, 0.4], dtype=torch.float64))
    torch.testing.assert_close(mae(pred, ref, reduction="mean"), torch.tensor(0.25, dtype=torch.float64))
    per_image = psnr(pred, ref)
    torch.testing.assert_close(psnr(pred, ref, reduction="mean"), per_image.mean())
    assert per_image[0] > per_image[1]


def test_image_metrics_reject_bad_input():
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="reduction"):
        psnr(x, x, reduction="sum")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        mae(x[0], x[0])
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[:, :1])
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(TypeError, match="pred"):
        ssim(x.numpy(), x)
    with pytest.raises(ValueError, match="win_size"):
        ssim(x, x, win_size=10)
    with pytest.raises(ValueError, match="win_size"):
        ssim(x, x, win_size=11)  # larger than 8x8


# ----------------------------------------------------------------------------------------------- SSIM


def test_ssim_identical_is_one():
    x = _uniform((3, 3, 16, 16), seed=3)
    assert ssim(x, x).tolist() == [1.0, 1.0, 1.0]
    assert ssim(x.float(), x.float(), gaussian=False, win_size=7).tolist() == [1.0, 1.0, 1.0]
    y = x + 0.3 * _uniform((3, 3, 16, 16), seed=4)
    assert (ssim(y, x) < 1.0).all()


_SSIM_SETTINGS = [
    # (flextok_hf kwargs, skimage kwargs)
    ({}, {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}),
    ({"gaussian": False, "win_size": 7, "use_sample_covariance": True}, {"win_size": 7}),
    ({"gaussian": False, "win_size": 5}, {"win_size": 5, "use_sample_covariance": False}),
]


def _skimage_ssim(pred, ref, data_range=2.0, **kwargs):
    return [
        structural_similarity(p.numpy(), r.numpy(), data_range=data_range, channel_axis=0, **kwargs)
        for p, r in zip(pred, ref)
    ]


@pytest.mark.parametrize("ours, theirs", _SSIM_SETTINGS)
def test_ssim_matches_skimage_on_random_images(ours, theirs):
    ref = _uniform((3, 3, 24, 20), seed=5)
    pred = (ref + 0.4 * _uniform((3, 3, 24, 20), seed=6)).clamp(-1, 1)
    expected = torch.tensor(_skimage_ssim(pred, ref, **theirs), dtype=torch.float64)
    torch.testing.assert_close(ssim(pred, ref, **ours), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(ssim(pred.float(), ref.float(), **ours).double(), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("ours, theirs", _SSIM_SETTINGS)
def test_ssim_matches_skimage_on_real_images(ours, theirs):
    ref = _real_images()
    noise = 0.15 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    distortions = {
        "noise": (ref + noise).clamp(-1, 1),
        "contrast": 0.6 * ref + 0.1,
        "blur": nn.functional.avg_pool2d(ref, 3, stride=1, padding=1, count_include_pad=False),
    }
    for name, pred in distortions.items():
        expected = torch.tensor(_skimage_ssim(pred, ref, **theirs), dtype=torch.float64)
        torch.testing.assert_close(ssim(pred, ref, **ours), expected, rtol=0, atol=1e-10, msg=name)
        torch.testing.assert_close(ssim(pred.float(), ref.float(), **ours).double(), expected, rtol=0, atol=1e-4)
    # grayscale [B, 1, H, W] and a [0, 255] data range
    gray = ref.mean(dim=1, keepdim=True)
    gray_pred = distortions["noise"].mean(dim=1, keepdim=True)
    expected = _skimage_ssim((gray_pred + 1) * 127.5, (gray + 1) * 127.5, data_range=255.0, **theirs)
    torch.testing.assert_close(
        ssim((gray_pred + 1) * 127.5, (gray + 1) * 127.5, data_range=255.0, **ours),
        torch.tensor(expected, dtype=torch.float64),
        rtol=0,
        atol=1e-10,
    )


def test_score_image_pairs_handles_mixed_sizes():
    a = _uniform((2, 3, 12, 12), seed=8)
    b = _uniform((1, 1, 9, 14), seed=9)
    predictions = [a[0], b[0].numpy(), a[1].tolist()]
    references = [a[0] * 0.5, b[0] * 0.9, a[1] + 0.1]
    scores = score_image_pairs(psnr, predictions, references)
    expected = [psnr(a[:1], a[:1] * 0.5), psnr(b, b * 0.9), psnr(a[1:], a[1:] + 0.1)]
    np.testing.assert_allclose(scores, torch.cat(expected).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="image pair 1"):
        score_image_pairs(mae, [a[0], a[1]], [a[0], b[0]])
    with pytest.raises(ValueError, match="same length"):
        score_image_pairs(mae, [a[0]], [a[0], a[1]])


# ----------------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_identical_statistics_is_zero():
    mu = np.random.default_rng(10).normal(size=6)
    sigma = _random_spd(6, seed=11)
    assert 0.0 <= frechet_distance(mu, sigma, mu, sigma) < 1e-12 * np.trace(sigma)
    assert frechet_distance(mu, np.zeros((6, 6)), mu, np.zeros((6, 6))) == 0.0
    # tensors are accepted too
    assert frechet_distance(torch.from_numpy(mu), torch.from_numpy(sigma), mu, sigma) < 1e-12 * np.trace(sigma)


def test_frechet_distance_mean_shift_is_squared_norm():
    rng = np.random.default_rng(12)
    mu1 = rng.normal(size=5)
    delta = rng.normal(size=5)
    sigma = _random_spd(5, seed=13)
    np.testing.assert_allclose(frechet_distance(mu1, sigma, mu1 + delta, sigma), delta @ delta, rtol=1e-9)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(14)
    mu1, mu2 = rng.normal(size=7), rng.normal(size=7)
    std1, std2 = rng.uniform(0.2, 2.0, size=7), rng.uniform(0.2, 2.0, size=7)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((std1 - std2) ** 2)
    value = frechet_distance(mu1, np.diag(std1**2), mu2, np.diag(std2**2))
    np.testing.assert_allclose(value, expected, rtol=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances():
    rng = np.random.default_rng(15)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    sigma1, sigma2 = _random_spd(8, seed=16), _random_spd(8, seed=17)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean)
    np.testing.assert_allclose(frechet_distance(mu1, sigma1, mu2, sigma2), expected, rtol=1e-9)
    # symmetric in its two arguments
    np.testing.assert_allclose(frechet_distance(mu2, sigma2, mu1, sigma1), expected, rtol=1e-9)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="mu1"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(3))


def test_feature_statistics_streaming_equals_batch():
    rng = np.random.default_rng(18)
    # a large common offset checks the numerically stable merge
    features = rng.normal(size=(103, 6)) * rng.uniform(0.5, 3.0, size=6) + 1e4
    stats = FeatureStatistics()
    for start, stop in [(0, 1), (1, 40), (40, 41), (41, 103)]:
        batch = features[start:stop]
        stats.update(torch.from_numpy(batch) if start == 1 else batch)  # tensors and arrays
    assert stats.count == 103
    assert stats.mean.dtype == torch.float64
    np.testing.assert_allclose(stats.mean.numpy(), features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance.numpy(), np.cov(features, rowvar=False, ddof=1), rtol=1e-9, atol=1e-9)

    left, right = FeatureStatistics().update(features[:50]), FeatureStatistics().update(features[50:])
    merged = left.merge(right)
    assert merged is left and merged.count == 103
    np.testing.assert_allclose(merged.covariance.numpy(), np.cov(features, rowvar=False), rtol=1e-9, atol=1e-9)
    assert FeatureStatistics().merge(right).count == 53


def test_feature_statistics_errors():
    stats = FeatureStatistics()
    with pytest.raises(ValueError, match="empty"):
        _ = stats.mean
    stats.update(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        _ = stats.covariance
    with pytest.raises(ValueError, match="D=3"):
        stats.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        stats.update(np.ones(3))
    with pytest.raises(TypeError, match="other"):
        stats.merge(np.ones((2, 3)))


def test_sampled_gaussians():
    generator = torch.Generator().manual_seed(19)
    a = torch.randn(20000, 4, generator=generator, dtype=torch.float64)
    b = torch.randn(20000, 4, generator=generator, dtype=torch.float64)
    stats_a, stats_b = FeatureStatistics().update(a), FeatureStatistics().update(b)
    # two samples of the same Gaussian: only sampling noise (expected ~1e-3 here)
    assert frechet_distance(stats_a.mean, stats_a.covariance, stats_b.mean, stats_b.covariance) < 0.02
    # a shifted copy of the same sample: exactly the squared shift
    delta = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    shifted = FeatureStatistics().update(a + delta)
    value = frechet_distance(stats_a.mean, stats_a.covariance, shifted.mean, shifted.covariance)
    np.testing.assert_allclose(value, delta.square().sum().item(), rtol=1e-8)
    # different scales per dimension: the diagonal closed form, up to sampling noise
    scale = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    scaled = FeatureStatistics().update(b * scale)
    value = frechet_distance(stats_a.mean, stats_a.covariance, scaled.mean, scaled.covariance)
    np.testing.assert_allclose(value, (scale - 1).square().sum().item(), rtol=0.05)


class _TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.penultimate = nn.Linear(16, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, images):
        return self.head(torch.tanh(self.penultimate(self.body(images))))


def test_streaming_frechet_distance_over_a_feature_network():
    torch.manual_seed(20)
    classifier = _TinyClassifier().double()
    network = LayerFeatures(classifier, "penultimate")
    real = _uniform((24, 3, 8, 8), seed=21)
    generated = (real + 0.3 * _uniform((24, 3, 8, 8), seed=22)).clamp(-1, 1)

    metric = FrechetDistance(network, name="tiny_classifier")
    for start in range(0, 24, 10):  # uneven batches, float32 images cast to the network's dtype
        metric.update(real[start : start + 10].float(), real=True)
        metric.update(generated[start : start + 10], real=False)
    result = metric.compute()
    assert list(result) == ["fd_tiny_classifier"]

    with torch.no_grad():
        real_features = classifier.penultimate(classifier.body(real.float().double())).numpy()
        generated_features = classifier.penultimate(classifier.body(generated)).numpy()
    expected = frechet_distance(
        generated_features.mean(0),
        np.cov(generated_features, rowvar=False),
        real_features.mean(0),
        np.cov(real_features, rowvar=False),
    )
    assert expected > 0
    np.testing.assert_allclose(result["fd_tiny_classifier"], expected, rtol=1e-8)

    metric.reset()
    metric.update(real, real=True)
    metric.update(real, real=False)
    assert metric.compute()["fd_tiny_classifier"] < 1e-10


def test_frechet_distance_errors():
    network = nn.Flatten()
    with pytest.raises(ValueError, match="name"):
        FrechetDistance(network, name="")
    with pytest.raises(TypeError, match="feature_network"):
        FrechetDistance(lambda x: x, name="f")
    metric = FrechetDistance(network, name="flatten")
    with pytest.raises(ValueError, match="at least 2"):
        metric.compute()
    with pytest.raises(TypeError, match="real"):
        metric.update(torch.zeros(2, 1, 2, 2), real="yes")
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        FrechetDistance(nn.Identity(), name="identity").update(torch.zeros(2, 1, 2, 2), real=True)
    with pytest.raises(ValueError, match="layer"):
        LayerFeatures(_TinyClassifier(), "fc9")


# --------------------------------------------------------------------------------------- evaluate modules


def test_metric_scripts_have_one_import_per_line():
    # evaluate's import scanner turns `import a, b` into a dependency named "a," and refuses to load
    for name in metrics.METRIC_NAMES:
        script = os.path.join(metrics.metric_path(name), f"{name}.py")
        with open(script, encoding="utf-8") as f:
            source = f.read()
        assert not re.search(r"^import\s+[^\n#]*,", source, flags=re.MULTILINE), script
        assert "from ." not in source, f"{script} must use absolute imports (evaluate copies the script)"


@pytest.fixture(scope="module")
def image_batches():
    ref = _uniform((6, 3, 12, 12), seed=23, dtype=torch.float32)
    pred = (ref + 0.2 * _uniform((6, 3, 12, 12), seed=24, dtype=torch.float32)).clamp(-1, 1)
    odd_ref = _uniform((2, 1, 11, 15), seed=25, dtype=torch.float32)
    odd_pred = odd_ref * 0.7
    # batch 1: a [B, C, H, W] tensor; batch 2: a list of per-image arrays of two sizes
    batches = [
        (pred[:4], ref[:4]),
        (
            [pred[4].numpy(), odd_pred[0].numpy(), pred[5].numpy(), odd_pred[1].numpy()],
            [ref[4], odd_ref[0], ref[5], odd_ref[1]],
        ),
    ]
    groups = [(pred.double(), ref.double()), (odd_pred.double(), odd_ref.double())]
    return batches, groups


_EXPECTED = {
    "psnr": lambda p, r, **kw: psnr(p, r, **kw),
    "mae": lambda p, r, **kw: mae(p, r),
    "ssim": lambda p, r, **kw: ssim(p, r, **kw),
}


@pytest.mark.parametrize(
    "name, class_name, kwargs",
    [
        ("psnr", "Psnr", {}),
        ("psnr", "Psnr", {"data_range": 1.0, "max_psnr": 40.0}),
        ("mae", "Mae", {}),
        ("ssim", "Ssim", {}),
        ("ssim", "Ssim", {"gaussian": False, "win_size": 7, "use_sample_covariance": True}),
    ],
)
def test_image_evaluate_modules(name, class_name, kwargs, image_batches, tmp_path):
    batches, groups = image_batches
    expected = torch.cat([_EXPECTED[name](p, r, **kwargs) for p, r in groups]).mean().item()

    loaded = metrics.load(name, cache_dir=str(tmp_path), keep_in_memory=True)
    direct = getattr(metrics, class_name)(cache_dir=str(tmp_path), keep_in_memory=True)
    assert type(loaded).__module__.startswith("evaluate_modules.")  # went through evaluate's script copy
    assert type(direct).__module__ == f"flextok_hf.metrics.{name}.{name}"
    for module in (loaded, direct):
        for pred, ref in batches:
            module.add_batch(predictions=pred, references=ref)
        result = module.compute(**kwargs)
        assert list(result) == [name]
        np.testing.assert_allclose(result[name], expected, rtol=1e-10)


def test_image_evaluate_modules_known_values(tmp_path):
    ref = _uniform((3, 3, 16, 16), seed=26, low=-1.0, high=0.5, dtype=torch.float32)
    shifted = ref + 0.5
    assert metrics.load("psnr", cache_dir=str(tmp_path)).compute(predictions=ref, references=ref) == {"psnr": 100.0}
    value = metrics.Psnr(cache_dir=str(tmp_path)).compute(predictions=shifted, references=ref)["psnr"]
    np.testing.assert_allclose(value, 20 * math.log10(2 / 0.5), rtol=1e-6)  # float32 rounding of ref + 0.5
    np.testing.assert_allclose(
        metrics.Mae(cache_dir=str(tmp_path)).compute(predictions=shifted, references=ref)["mae"], 0.5, rtol=1e-6
    )
    assert metrics.Ssim(cache_dir=str(tmp_path)).compute(predictions=ref, references=ref) == {"ssim": 1.0}


def test_frechet_distance_evaluate_module(tmp_path):
    rng = np.random.default_rng(27)
    real = rng.normal(size=(40, 5)).astype(np.float32)
    generated = (rng.normal(size=(40, 5)) * 1.5 + 0.3).astype(np.float32)
    stats_real = FeatureStatistics().update(real)
    stats_generated = FeatureStatistics().update(generated)
    expected = frechet_distance(
        stats_generated.mean, stats_generated.covariance, stats_real.mean, stats_real.covariance
    )

    loaded = metrics.load("frechet_distance", cache_dir=str(tmp_path), keep_in_memory=True)
    direct = metrics.FrechetDistanceMetric(cache_dir=str(tmp_path), keep_in_memory=True)
    assert type(loaded).__module__.startswith("evaluate_modules.")
    for module in (loaded, direct):
        module.add_batch(predictions=generated[:25], references=real[:25])
        module.add_batch(predictions=list(generated[25:]), references=torch.from_numpy(real[25:]))
        result = module.compute(feature_network_name="toy_net")
        assert list(result) == ["fd_toy_net"]
        np.testing.assert_allclose(result["fd_toy_net"], expected, rtol=1e-10)
        with pytest.raises(ValueError, match="feature_network_name"):
            module.compute(predictions=generated, references=real)
    # identical features: zero
    same = direct.compute(predictions=real, references=real, feature_network_name="toy_net")
    assert same["fd_toy_net"] < 1e-10


def test_load_rejects_unknown_names():
    with pytest.raises(ValueError, match="fid"):
        metrics.load("fid")
    with pytest.raises(AttributeError):
        _ = metrics.NotAMetric
