"""The transformers task `pipeline("flextok-tokenize")`: image(s) -> FlexTok token ids."""

from __future__ import annotations

import torch
from transformers import Pipeline


class FlexTokTokenizePipeline(Pipeline):
    """Image(s) in, `{"token_ids": [...], "num_tokens": k}` out (one dict per image).

    ```python
    import flextok_hf  # registers the task
    from transformers import pipeline

    tokenizer = pipeline("flextok-tokenize", model="path/to/flextok")
    tokenizer(image, num_tokens=16)  # {"token_ids": [16 ids], "num_tokens": 16}
    tokenizer([img1, img2], batch_size=2)  # a list of dicts
    ```

    Images may be PIL images (any mode), numpy arrays, torch tensors or file paths. `num_tokens` (1..K, default K)
    keeps the first ids of the ordered, coarse-to-fine sequence.
    """

    _load_image_processor = True
    _load_tokenizer = False
    _load_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, num_tokens=None, **kwargs):
        postprocess_kwargs = {}
        if num_tokens is not None:
            num_registers = self.model.config.num_registers
            if not isinstance(num_tokens, int) or isinstance(num_tokens, bool):
                raise TypeError(f"`num_tokens` must be an int, got {num_tokens!r}.")
            if not 1 <= num_tokens <= num_registers:
                raise ValueError(f"`num_tokens` must be in [1, {num_registers}], got {num_tokens}.")
            postprocess_kwargs["num_tokens"] = num_tokens
        return {}, {}, postprocess_kwargs

    def preprocess(self, image):
        return self.image_processor(image, return_tensors="pt")

    def _forward(self, model_inputs):
        pixel_values = model_inputs["pixel_values"].to(self.model.dtype)
        return {"token_ids": self.model.encode(pixel_values=pixel_values).token_ids}

    def postprocess(self, model_outputs, num_tokens=None):
        token_ids: torch.Tensor = model_outputs["token_ids"]
        if token_ids.ndim == 2:  # unbatched call: [1, K]
            token_ids = token_ids[0]
        k = num_tokens or token_ids.shape[-1]
        return {"token_ids": token_ids[:k].tolist(), "num_tokens": k}


__all__ = ["FlexTokTokenizePipeline"]
