"""Linear probe on FlexTok's FSQ codes: how much class information the first k tokens carry.

```python
from flextok_hf.evaluation import linear_probe

probe = linear_probe(model, "mnist", "mnist")     # train split -> test split, per budget
```
"""

from __future__ import annotations

import numpy as np
import torch

from .evaluation_data import _check_budgets, _default_processor, _resolve_dataset, load_pixel_values, tokenize_all


def codes_features(token_ids: torch.Tensor, quantizer, budget: int) -> np.ndarray:
    """Ids `[N, K]` -> FSQ codes of the first `budget` tokens, zero-padded to K and flattened: `[N, K * d]`."""
    codes = quantizer.ids_to_codes(torch.as_tensor(token_ids).long().cpu())
    codes[:, budget:] = 0
    return codes.flatten(1).numpy()


def linear_probe_from_ids(
    token_ids_train,
    labels_train,
    token_ids_test,
    labels_test,
    quantizer,
    budgets: list[int] | None = None,
    max_iter: int = 1000,
    C: float = 1.0,
) -> dict:
    """Logistic regression (scikit-learn, standardised inputs) on the zero-padded codes of the first k tokens.

    Args:
        token_ids_train / token_ids_test: ids `[N, K]` (tensor, array or nested lists).
        labels_train / labels_test: integer labels `[N]`.
        quantizer: maps ids to codes (`FlexTokFSQ`, i.e. `model.quantizer`).
        budgets: k values (default 1, 2, 4, ..., K); one probe is fit per budget.
        max_iter, C: passed to `LogisticRegression`.
    Returns:
        `{"budgets", "accuracy" (test, one per budget), "train_accuracy", "majority_baseline", "num_train",
        "num_test"}`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ids_train, ids_test = torch.as_tensor(token_ids_train), torch.as_tensor(token_ids_test)
    y_train, y_test = np.asarray(labels_train).reshape(-1), np.asarray(labels_test).reshape(-1)
    for name, ids, labels in (("train", ids_train, y_train), ("test", ids_test, y_test)):
        if ids.ndim != 2 or ids.shape[0] != len(labels) or ids.shape[0] == 0:
            raise ValueError(
                f"`token_ids_{name}` must be [N, K] with one label per row, got ids {tuple(ids.shape)} and "
                f"{len(labels)} labels."
            )
    if ids_train.shape[1] != ids_test.shape[1]:
        raise ValueError(f"train and test ids differ in K: {ids_train.shape[1]} vs {ids_test.shape[1]}.")
    if len(np.unique(y_train)) < 2:
        raise ValueError("`labels_train` must contain at least 2 classes.")
    budgets = _check_budgets(budgets, ids_train.shape[1])
    accuracy, train_accuracy = [], []
    for budget in budgets:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
        probe.fit(codes_features(ids_train, quantizer, budget), y_train)
        train_accuracy.append(float(probe.score(codes_features(ids_train, quantizer, budget), y_train)))
        accuracy.append(float(probe.score(codes_features(ids_test, quantizer, budget), y_test)))
    _, counts = np.unique(y_test, return_counts=True)
    return {
        "budgets": budgets,
        "accuracy": accuracy,
        "train_accuracy": train_accuracy,
        "majority_baseline": float(counts.max() / counts.sum()),
        "num_train": int(len(y_train)),
        "num_test": int(len(y_test)),
    }


@torch.no_grad()
def linear_probe(
    model,
    train_dataset,
    test_dataset,
    budgets: list[int] | None = None,
    num_train: int | None = 2000,
    num_test: int | None = 500,
    batch_size: int = 64,
    image_processor=None,
    **probe_kwargs,
) -> dict:
    """Tokenize labelled images and run `linear_probe_from_ids` (one test accuracy per budget).

    `train_dataset` / `test_dataset` are `datasets.Dataset`s with `image` and ClassLabel `label` columns, or names for
    `load_image_dataset` (their "train" and "test" splits)."""
    model.eval()
    processor = image_processor if image_processor is not None else _default_processor(model)
    splits = []
    for dataset, split, limit in ((train_dataset, "train", num_train), (test_dataset, "test", num_test)):
        dataset, name = _resolve_dataset(dataset, split)
        pixel_values, labels, _ = load_pixel_values(dataset, processor, limit)
        if labels is None:
            raise ValueError(f"The linear probe needs a ClassLabel `label` column; {name!r} has none.")
        splits.append((tokenize_all(model, pixel_values, batch_size), labels.numpy()))
    (ids_train, y_train), (ids_test, y_test) = splits
    return linear_probe_from_ids(ids_train, y_train, ids_test, y_test, model.quantizer, budgets, **probe_kwargs)


__all__ = ["codes_features", "linear_probe", "linear_probe_from_ids"]
