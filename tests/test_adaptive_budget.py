"""num_tokens="auto": per-image adaptive budgets in FlexTokPipeline, the flextok-tokenize task and `flextok-hf tokenize`.

Every expectation is recomputed independently by decoding every candidate budget of every image from the same noise
(`coarse_to_fine`, which starts all budgets of an image from one draw of the generator), so the tests check the
mechanics on a tiny random model, not numbers of any trained weights.
"""

import json
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn
from transformers import pipeline

import flextok_hf  # noqa: F401  (registers the task)
from flextok_hf import FlexTokAutoBudgetOutput, FlexTokModel, FlexTokPipeline
from flextok_hf.adaptive_budget import (
    bisect_candidates,
    candidate_budgets,
    content_seed,
    meets_target,
    saved_decoder_defaults,
    smallest_sufficient,
)
from flextok_hf.cli import main as cli_main
from flextok_hf.data import sample_images
from flextok_hf.evaluation import sample_seed
from flextok_hf.metrics.functional import psnr
from flextok_hf.training.pretokenize import load_pretokenized
from flextok_test_utils import tiny_model

STEPS = 3
MARGIN = 2e-3  # targets keep this distance (dB) from every measured quality: float noise of batching is ~1e-5


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe():
    pipe = FlexTokPipeline.from_flextok(tiny_model(), num_inference_steps=STEPS, guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def images():
    """Six real images: skimage photos, MNIST digits, Animal-MNIST silhouettes (bundled)."""
    return [image for _, image in sample_images(("skimage", "mnist", "animal_mnist"))]


def every_budget_quality(pipe, images, budgets, steps=STEPS, seed=0) -> torch.Tensor:
    """PSNR `[N, J]` of every budget of every image, all decoded from each image's own noise (one draw per image)."""
    out = pipe.coarse_to_fine(
        images, budgets=budgets, num_inference_steps=steps, generator=seeded(seed), output_type="raw"
    )
    reference = pipe.preprocess(images).float()
    n, j = out.images.shape[:2]
    predicted = out.images.reshape(n * j, *out.images.shape[2:]).clamp(-1, 1)
    return psnr(predicted, reference.repeat_interleave(j, dim=0), data_range=2.0).reshape(n, j)


def target_between(values: torch.Tensor, rank: int) -> float:
    """A target between the `rank`-th and the next larger distinct value of `values`, far from every value."""
    ordered = sorted(set(values.tolist()))
    for index in list(range(rank, len(ordered) - 1)) + list(range(rank)):
        low, high = ordered[index], ordered[index + 1]
        if high - low > 2 * MARGIN:
            return (low + high) / 2
    raise AssertionError(f"no gap of {2 * MARGIN} dB between the qualities {ordered}")


def first_meeting(row: torch.Tensor, target: float, start: int = 0) -> tuple[int, bool]:
    for j in range(start, len(row)):
        if row[j] >= target:
            return j, True
    return len(row) - 1, False


def bisection_pick(row: torch.Tensor, target: float) -> tuple[int, list[int]]:
    """The candidate a bisection over `row` (ascending budgets) picks, and the candidates it looks at."""
    low, high, seen = 0, len(row), []
    while low < high:
        mid = (low + high) // 2
        seen.append(mid)
        low, high = (low, mid) if row[mid] >= target else (mid + 1, high)
    return min(low, len(row) - 1), seen


# ------------------------------------------------------------------------------------------------------ the pipeline
def test_auto_picks_the_smallest_sufficient_budget_with_mixed_targets(pipe, images, caplog):
    budgets = candidate_budgets(8)
    assert budgets == [1, 2, 4, 8]
    quality = every_budget_quality(pipe, images, budgets)
    # one target per image, each between two of its measured qualities (so different images need different budgets)
    targets = [target_between(quality[i], i % (len(budgets) - 1)) for i in range(len(images))]
    targets[-1] = float(quality[-1].max()) + 0.5  # unreachable: gets K and says so
    expected = [first_meeting(quality[i], targets[i]) for i in range(len(images))]
    assert len({j for j, _ in expected}) >= 2  # the batch really mixes budgets

    with caplog.at_level(logging.WARNING, logger="flextok_hf.adaptive_budget"):
        out = pipe(
            images,
            num_tokens="auto",
            quality_target=targets,
            search_num_inference_steps=STEPS,  # the search runs the final decode: the exact smallest budget
            generator=seeded(0),
            output_type="pt",
        )
    assert out.num_tokens == [budgets[j] for j, _ in expected]
    assert out.target_met == [met for _, met in expected] and out.target_met[-1] is False
    assert "1 of 6 images cannot meet their psnr target within 8 tokens" in caplog.text
    assert [len(ids) for ids in out.token_ids] == out.num_tokens
    full_ids = pipe.tokenize(images)
    assert all(torch.equal(ids, full[: len(ids)]) for ids, full in zip(out.token_ids, full_ids))
    chosen = torch.tensor([quality[i, j] for i, (j, _) in enumerate(expected)])
    assert torch.allclose(torch.tensor(out.quality), chosen, atol=1e-3)
    # the returned images are the reconstructions at the chosen budgets from the same noise
    grid = pipe.coarse_to_fine(images, budgets=budgets, generator=seeded(0), output_type="pt").images
    expected_images = torch.stack([grid[i, j] for i, (j, _) in enumerate(expected)])
    assert torch.allclose(out.images.float(), expected_images.float(), atol=1e-4)

    # tokenize("auto") keeps the same prefixes; a tuple output holds (images, prefixes)
    ids = pipe.tokenize(
        images, num_tokens="auto", quality_target=targets, search_num_inference_steps=STEPS, generator=seeded(0)
    )
    assert [len(x) for x in ids] == out.num_tokens
    tuple_images, tuple_ids = pipe(
        images[:2],
        num_tokens="auto",
        quality_target=targets[:2],
        search_num_inference_steps=STEPS,
        generator=seeded(0),
        return_dict=False,
        output_type="np",
    )
    assert tuple_images.shape[0] == 2 and [len(x) for x in tuple_ids] == out.num_tokens[:2]


def test_min_and_max_tokens_bound_the_budget(pipe, images):
    assert candidate_budgets(8, 3, 8) == [3, 4, 8]
    assert candidate_budgets(8, None, 6) == [1, 2, 4, 6]
    assert candidate_budgets(32, 5, 5) == [5]
    quality = every_budget_quality(pipe, images, [2, 4, 6])
    low = float(quality.min()) - 1.0  # every budget meets it: the smallest allowed wins
    out = pipe.choose_num_tokens(images, quality_target=low, min_tokens=2, max_tokens=6, generator=seeded(0))
    assert out.candidate_budgets == [2, 4, 6] and out.num_tokens == [2] * len(images) and all(out.target_met)
    assert out.search_quality.shape == (len(images), 3)
    high = float(quality.max()) + 1.0  # nothing meets it: the largest allowed, not K
    out = pipe.choose_num_tokens(images, quality_target=high, min_tokens=2, max_tokens=6, generator=seeded(0))
    assert out.num_tokens == [6] * len(images) and not any(out.target_met)
    assert torch.allclose(torch.tensor(out.quality), quality[:, 2], atol=1e-3)


def test_fewer_search_steps_then_full_step_verification(pipe, images):
    """With s < S search steps the choice is: the first candidate >= the search's pick whose full-step reconstruction
    meets the target (else the largest), and the reported quality is that of the returned full-step image."""
    budgets = candidate_budgets(8)
    search = every_budget_quality(pipe, images, budgets, steps=1)
    full = every_budget_quality(pipe, images, budgets, steps=STEPS)
    targets = []
    for i in range(len(images)):
        both = torch.cat([search[i], full[i]])
        targets.append(target_between(both, (2 * i) % (2 * len(budgets) - 1)))
    expected, looked_at = [], torch.zeros_like(search, dtype=torch.bool)
    for i, target in enumerate(targets):
        start, seen = bisection_pick(search[i], target)
        looked_at[i, seen] = True
        expected.append(first_meeting(full[i], target, start))
    out = pipe.choose_num_tokens(images, quality_target=targets, search_num_inference_steps=1, generator=seeded(0))
    assert isinstance(out, FlexTokAutoBudgetOutput)
    # the search bisects: it decodes ceil(log2(J + 1)) candidates at most per image, NaN elsewhere
    assert torch.equal(~out.search_quality.isnan(), looked_at)
    assert looked_at.sum(dim=1).max() <= 3
    assert torch.allclose(out.search_quality[looked_at], search[looked_at], atol=1e-3)
    assert out.num_tokens == [budgets[j] for j, _ in expected]
    assert out.target_met == [met for _, met in expected]
    chosen = torch.tensor([full[i, j] for i, (j, _) in enumerate(expected)])
    assert torch.allclose(torch.tensor(out.quality), chosen, atol=1e-3)
    # the default search is cheaper than the final decode
    default = pipe.choose_num_tokens(images, quality_target=targets, generator=seeded(0))
    assert default.num_tokens == out.num_tokens  # max(1, 3 // 10) = 1 search step


def test_bisection_finds_the_first_sufficient_candidate_of_monotone_rows():
    generator = torch.Generator().manual_seed(0)
    for num_budgets in range(1, 8):
        quality = torch.rand(12, num_budgets, generator=generator).mul(30).sort(dim=1).values
        targets = torch.rand(12, generator=generator).mul(34) - 2  # some below every value, some above
        calls = []

        def score(rows, columns, quality=quality, calls=calls):
            calls.append(len(rows))
            return quality[rows, columns]

        searched = bisect_candidates(score, 12, num_budgets, targets, "psnr")
        assert len(calls) <= math.ceil(math.log2(num_budgets + 1))
        expected, found = smallest_sufficient(quality, targets, "psnr")
        picked, _ = smallest_sufficient(searched, targets, "psnr")
        assert torch.equal(picked, expected), num_budgets
        assert (~searched.isnan()).any(dim=1).all()  # every image looked at one candidate at least
        met = meets_target(searched, targets[:, None], "psnr").any(dim=1)
        assert torch.equal(met, found)  # the bisection's pick is decoded whenever one meets the target


def test_feature_distance_metric(pipe, images):
    # the default network: the shipped classifier's features (cosine distance in [0, 2])
    from flextok_hf.metrics.classifier import ClassifierFeatureNetwork, load_default_classifier

    out = pipe(
        images[:3],
        num_tokens="auto",
        quality_target=2.0,
        quality_metric="feature_distance",
        generator=seeded(0),
        output_type="pt",
    )
    assert out.num_tokens == [1, 1, 1] and all(out.target_met)  # every distance is <= 2
    network = ClassifierFeatureNetwork(load_default_classifier())
    reference = network(pipe.preprocess(images[:3]).float())
    mine = network(out.images.float() * 2 - 1)
    assert torch.allclose(torch.tensor(out.quality), 1 - torch.cosine_similarity(mine, reference, dim=-1), atol=1e-3)

    # a custom feature network; the smallest budget whose distance is <= the target
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()).eval()
    budgets = candidate_budgets(8)
    grid = pipe.coarse_to_fine(images, budgets=budgets, generator=seeded(0), output_type="raw").images
    reference = features(pipe.preprocess(images).float())
    distance = torch.stack(
        [
            1 - torch.cosine_similarity(features(grid[:, j].clamp(-1, 1)), reference, dim=-1)
            for j in range(len(budgets))
        ],
        dim=1,
    ).detach()
    targets, expected = [], []
    for i in range(len(images)):
        ordered = sorted(set(distance[i].tolist()))
        target = (ordered[0] + ordered[1]) / 2 if len(ordered) > 1 else ordered[0] + 1e-3
        targets.append(target)
        expected.append(budgets[next(j for j in range(len(budgets)) if distance[i, j] <= target)])
    out = pipe.choose_num_tokens(
        images,
        quality_target=targets,
        quality_metric="feature_distance",
        feature_network=features,
        search_num_inference_steps=STEPS,
        generator=seeded(0),
    )
    assert out.num_tokens == expected and all(out.target_met)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(quality_target=-1.0),
            ValueError,
            r"`quality_target` must be a minimum PSNR in dB in \(0, 100\], got -1",
        ),
        (dict(quality_target=float("nan")), ValueError, r"`quality_target` must be .*\(0, 100\].*nan"),
        (dict(quality_target=math.inf), ValueError, r"`quality_target` must be .*\(0, 100\]"),
        (dict(quality_target=0), ValueError, r"`quality_target` must be .*\(0, 100\]"),
        (dict(quality_target=2.5, quality_metric="feature_distance"), ValueError, r"maximum .* in \[0, 2\], got 2.5"),
        (
            dict(quality_target=20.0, quality_metric="ssim"),
            ValueError,
            r"`quality_metric` must be one of \('psnr', 'feature_distance'\), got 'ssim'",
        ),
        (dict(), ValueError, r"`num_tokens='auto'` needs `quality_target`"),
        (dict(quality_target=[20.0]), ValueError, r"`quality_target` has 1 entries but 2 images"),
        (dict(quality_target=[20.0, float("nan")]), ValueError, r"`quality_target\[1\]` must be"),
        (dict(quality_target=True), TypeError, r"`quality_target` must be a number"),
        (dict(quality_target=20.0, min_tokens=0), ValueError, r"`min_tokens` must be in \[1, 8\], got 0"),
        (dict(quality_target=20.0, max_tokens=9), ValueError, r"`max_tokens` must be in \[1, 8\], got 9"),
        (
            dict(quality_target=20.0, min_tokens=4, max_tokens=2),
            ValueError,
            r"`min_tokens` \(4\) must be <= `max_tokens` \(2\)",
        ),
        (
            dict(quality_target=20.0, search_num_inference_steps=4),
            ValueError,
            r"`search_num_inference_steps` must be in \[1, 3\]",
        ),
    ],
)
def test_bad_auto_arguments_name_the_parameter_and_range(pipe, images, kwargs, error, message):
    with pytest.raises(error, match=message):
        pipe(images[:2], num_tokens="auto", **kwargs)


def test_auto_arguments_need_auto(pipe, images):
    with pytest.raises(ValueError, match=r"`quality_target`, `min_tokens` can only be used with `num_tokens='auto'`"):
        pipe(images[:1], num_tokens=4, quality_target=20.0, min_tokens=2)
    with pytest.raises(ValueError, match=r"`num_tokens` must be None, an int, a list of ints or 'auto', got 'best'"):
        pipe.tokenize(images[:1], num_tokens="best")
    with pytest.raises(ValueError, match="`callback_on_step_end` does not apply"):
        pipe(images[:1], num_tokens="auto", quality_target=20.0, callback_on_step_end=lambda *a: {})
    out = pipe(images[:2], num_tokens=[2, 8], generator=seeded(0), output_type="np")  # fixed budgets: num_tokens too
    assert out.num_tokens == [2, 8] and out.quality is None and out.target_met is None


# ------------------------------------------------------------------------------------------------------ the task
def test_tokenize_task_auto(pipe, images, tmp_path):
    pipe.save_pretrained(tmp_path)  # a pipeline folder: the task reads its decoder defaults (3 steps, guidance 2)
    model = FlexTokModel.from_pretrained(tmp_path / "flextok")
    defaults = saved_decoder_defaults(model)
    assert isinstance(defaults.pop("scheduler"), type(pipe.scheduler))  # the saved sampler travels with them
    assert defaults == {"num_inference_steps": 3, "guidance_scale": 2.0, "adaptive_guidance": True}
    task = pipeline("flextok-tokenize", model=model, image_processor=pipe.image_processor, device="cpu")
    quality = every_budget_quality(pipe, images, candidate_budgets(8))
    target = float(quality.median())

    rows = task(images, num_tokens="auto", quality_target=target, search_num_inference_steps=STEPS)
    batched = task(images, num_tokens="auto", quality_target=target, search_num_inference_steps=STEPS, batch_size=4)
    # each image's noise is seeded from its own pixels: the batch does not matter
    assert [(r["token_ids"], r["num_tokens"], r["target_met"]) for r in rows] == [
        (r["token_ids"], r["num_tokens"], r["target_met"]) for r in batched
    ]
    assert np.allclose([r["quality"] for r in rows], [r["quality"] for r in batched], atol=1e-4)
    assert all(set(row) == {"token_ids", "num_tokens", "quality", "target_met"} for row in rows)
    # the same as the pipeline with the content-seeded noise
    pixel_values = pipe.preprocess(images)
    noise = pipe.flextok.prepare_noise(len(images), [seeded(content_seed(x)) for x in pixel_values])
    direct = pipe.choose_num_tokens(images, quality_target=target, search_num_inference_steps=STEPS, latents=noise)
    assert [row["num_tokens"] for row in rows] == direct.num_tokens
    assert [row["target_met"] for row in rows] == direct.target_met
    assert np.allclose([row["quality"] for row in rows], direct.quality, atol=1e-4)
    full = task(images)
    assert all(row["token_ids"] == f["token_ids"][: row["num_tokens"]] for row, f in zip(rows, full))
    assert task(images[0], num_tokens="auto", quality_target=target, seed=1, search_num_inference_steps=STEPS)[
        "num_tokens"
    ] in (1, 2, 4, 8)

    with pytest.raises(ValueError, match=r"`quality_target` must be a minimum PSNR in dB in \(0, 100\], got nan"):
        task(images[0], num_tokens="auto", quality_target=float("nan"))
    with pytest.raises(ValueError, match="`quality_metric` must be one of"):
        task(images[0], num_tokens="auto", quality_target=1.0, quality_metric="lpips")
    with pytest.raises(TypeError, match="one number for the task"):
        task(images[0], num_tokens="auto", quality_target=[1.0])
    with pytest.raises(ValueError, match="can only be used with `num_tokens='auto'`"):
        task(images[0], num_tokens=2, quality_target=1.0)


# ------------------------------------------------------------------------------------------------------ the CLI
def test_tokenize_command_jsonl_and_dataset(pipe, images, tmp_path, capsys):
    model_dir, image_dir = tmp_path / "pipe", tmp_path / "images"
    pipe.save_pretrained(model_dir)
    image_dir.mkdir()
    paths = []
    for index, image in enumerate(images):
        paths.append(str(image_dir / f"{index}.png"))
        image.save(paths[-1])
    target = float(every_budget_quality(pipe, images, candidate_budgets(8)).median())
    out, dataset_dir = tmp_path / "ids.jsonl", tmp_path / "ids_dataset"
    argv = [
        "tokenize",
        str(image_dir),
        "--model",
        str(model_dir),
        "--num-tokens",
        "auto",
        "--target-psnr",
        str(target),
    ]
    argv += ["--search-steps", str(STEPS), "--batch-size", "4", "--out", str(out), "--dataset-dir", str(dataset_dir)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == paths
    assert all(
        row["quality_metric"] == "psnr" and row["quality_target"] == pytest.approx(target, abs=1e-3) for row in rows
    )
    # image i's noise is seeded with sample_seed(seed, i), whatever the batch size
    direct = pipe.choose_num_tokens(
        images,
        quality_target=target,
        search_num_inference_steps=STEPS,
        generator=[seeded(sample_seed(0, i)) for i in range(len(images))],
    )
    assert [row["num_tokens"] for row in rows] == direct.num_tokens
    assert [row["target_met"] for row in rows] == direct.target_met
    assert [row["token_ids"] for row in rows] == [
        ids[:k].tolist() for ids, k in zip(direct.token_ids, direct.num_tokens)
    ]
    assert np.allclose([row["quality"] for row in rows], direct.quality, atol=1e-3)
    assert f"{sum(direct.target_met)}/{len(images)} images met the target" in printed

    splits, metadata = load_pretokenized(dataset_dir)  # the layout train-prior reads
    train = splits["train"]
    assert metadata["codebook_size"] == pipe.flextok.config.codebook_size and metadata["num_tokens"] == 8
    assert list(train["num_tokens"]) == direct.num_tokens and all(len(ids) == 8 for ids in train["token_ids"])

    # a fixed budget, printed as JSON lines
    assert cli_main(["tokenize", paths[0], "--model", str(model_dir), "--num-tokens", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line == {"image": paths[0], "token_ids": pipe.tokenize(images[0])[0][:3].tolist(), "num_tokens": 3}

    # user errors: one line, exit status 2
    for bad, message in [
        (["--target-psnr", "18"], "--target-psnr can only be used with `--num-tokens auto`"),
        (["--num-tokens", "auto"], "`--num-tokens auto` needs `--target-psnr`"),
        (
            ["--num-tokens", "auto", "--target-psnr", "-3"],
            r"`--target-psnr` must be a minimum PSNR in dB in (0, 100], got -3.0",
        ),
        (["--num-tokens", "auto", "--max-feature-distance", "nan"], "`--max-feature-distance` must be a maximum"),
        (["--num-tokens", "most"], "`--num-tokens` must be 'auto' or an integer budget"),
    ]:
        assert cli_main(["tokenize", paths[0], "--model", str(model_dir), *bad]) == 2
        assert message in capsys.readouterr().err
    assert cli_main(["tokenize", str(tmp_path / "missing.png"), "--model", str(model_dir)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
