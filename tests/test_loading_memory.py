"""A bf16 load of a float32 checkpoint holds only its own tensors (`flextok_hf.loading.release_checkpoint_mapping`).

`from_pretrained` memory-maps `model.safetensors`. Tensors loaded as they are stay views into that mapping; a bf16
load converts the trunk but keeps the VAE in float32, and those VAE views would keep the whole file mapped, including
every page read for the conversion.
"""

import gc
import os

import pytest
import torch

from flextok_hf import FlexTokModel
from flextok_test_utils import converted_fixture_model

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the Linux memory map")


def mapped(path) -> bool:
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(os.fspath(path)) for line in f)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp32_checkpoint")
    converted_fixture_model().save_pretrained(folder)
    return folder


def test_fp32_load_is_memory_mapped(saved):
    model = FlexTokModel.from_pretrained(saved)
    assert mapped(saved / "model.safetensors")  # the lazy fp32 load this test compares against
    del model


def test_bf16_load_releases_the_file_and_keeps_values(saved):
    reference = FlexTokModel.from_pretrained(saved).state_dict()
    reference = {name: tensor.clone() for name, tensor in reference.items()}
    gc.collect()
    model = FlexTokModel.from_pretrained(saved, dtype=torch.bfloat16)
    gc.collect()
    assert not mapped(saved / "model.safetensors")
    assert model.decoder.layers[0].attn.q_proj.weight.dtype == torch.bfloat16
    vae_params = dict(model.vae.named_parameters())
    assert vae_params and all(p.dtype == torch.float32 for p in vae_params.values())
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, reference[name].to(tensor.dtype), rtol=0, atol=0, msg=name)


def test_string_dtype_is_released_too(saved):
    model = FlexTokModel.from_pretrained(saved, dtype="bfloat16")
    gc.collect()
    assert not mapped(saved / "model.safetensors")
    assert model.encoder.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
