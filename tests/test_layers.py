"""The decoder block's fused elementwise work computes the paper's formulas.

`FlexTokAdaLNBlock` modulates per token group without expanding the group values to every token, uses in-place SwiGLU
and norms without upcast copies (`flextok_hf.layers`). Here it is checked against the formulas written out plainly:
expanded modulation, LayerNorm on a float32 copy, eager softmax attention.
"""

import pytest
import torch
import torch.nn.functional as F

from flextok_hf import FlexTokConfig
from flextok_hf.layers import FlexTokAdaLNBlock, grouped_addcmul
from flextok_hf.modeling_flextok_decoder import FlexTokDecoder

pytestmark = pytest.mark.usefixtures("one_thread")


def layer_norm(x, eps):
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


def expand(values, group_sizes):
    """`[B, G, D]` -> `[B, N, D]` by repeating group g `group_sizes[g]` times."""
    return values.repeat_interleave(torch.tensor(group_sizes), dim=1)


def reference_block(block, x, temb, group_sizes):
    batch, length, dim = x.shape
    attn, mlp, eps = block.attn, block.mlp, block.eps
    modulation = block.adaln_modulation(temb).view(batch, block.num_groups, 6, dim)
    chunks = [modulation[:, :, i] for i in range(6)]
    if block.num_groups > 1:
        chunks = [expand(c, group_sizes) for c in chunks]
    gate_msa, gate_mlp, shift_msa, scale_msa, shift_mlp, scale_mlp = chunks

    def attention(h):
        shape = (batch, length, attn.num_heads, attn.head_dim)
        q = layer_norm(attn.q_proj(h).view(shape), eps).transpose(1, 2)
        k = layer_norm(attn.k_proj(h).view(shape), eps).transpose(1, 2)
        v = attn.v_proj(h).view(shape).transpose(1, 2)
        weights = torch.softmax((q @ k.transpose(-1, -2)).float() * attn.scaling, dim=-1).to(v.dtype)
        return attn.o_proj((weights @ v).transpose(1, 2).reshape(batch, length, dim))

    def swiglu(h):
        return mlp.down_proj(F.silu(mlp.gate_proj(h)) * mlp.up_proj(h))

    x = x + gate_msa * attention(layer_norm(x, eps) * (1 + scale_msa) + shift_msa)
    return x + gate_mlp * swiglu(layer_norm(x, eps) * (1 + scale_mlp) + shift_mlp)


def random_block(adaln_expansion: int, seed: int = 0):
    torch.manual_seed(seed)
    config = FlexTokConfig.tiny(adaln_expansion=adaln_expansion)
    config._attn_implementation = "sdpa"
    block = FlexTokAdaLNBlock(config, config.decoder_hidden_size, config.decoder_head_dim).eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0, 0.1)
    return block


@pytest.mark.parametrize("adaln_expansion", [1, 2])
@pytest.mark.parametrize("grad", [False, True])
def test_block_matches_the_plain_formulas_in_fp32(adaln_expansion, grad):
    block = random_block(adaln_expansion)
    group_sizes = (16, 8)  # unequal groups: patches and registers
    x = torch.randn(3, sum(group_sizes), 64)
    temb = torch.randn(3, 64)
    with torch.set_grad_enabled(grad):
        out = block(x.requires_grad_(grad), temb, group_sizes)
        expected = reference_block(block, x, temb, group_sizes)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    if grad:
        out.square().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_block_does_not_modify_its_input():
    block = random_block(2)
    x = torch.randn(2, 24, 64)
    before = x.clone()
    with torch.no_grad():
        block(x, torch.randn(2, 64), (16, 8))
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_bf16_block_stays_bf16_and_close():
    block = random_block(2)
    x, temb = torch.randn(2, 24, 64), torch.randn(2, 64)
    with torch.no_grad():
        expected = block(x, temb, (16, 8))
        out = block.to(torch.bfloat16)(x.bfloat16(), temb.bfloat16(), (16, 8))
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max() < 0.05 * expected.abs().max()


@pytest.mark.parametrize("grad", [False, True])
def test_grouped_addcmul(grad):
    sizes = (5, 3, 2)
    per_token = torch.randn(2, 10, 4, requires_grad=grad)
    per_group = torch.randn(2, 3, 4)
    other = torch.randn(2, 10, 4)
    with torch.set_grad_enabled(grad):
        out = grouped_addcmul(per_token, other, per_group, sizes)
        swapped = grouped_addcmul(per_group, per_token, per_group, sizes)
    torch.testing.assert_close(out, per_token + other * expand(per_group, sizes))
    torch.testing.assert_close(swapped, expand(per_group, sizes) + per_token * expand(per_group, sizes))
    assert out.requires_grad == grad
    broadcast = grouped_addcmul(per_token, other, per_group[:, :1], ())
    torch.testing.assert_close(broadcast, per_token + other * per_group[:, :1])


def test_decoder_output_is_independent_of_the_batch_it_is_in():
    torch.manual_seed(0)
    config = FlexTokConfig.tiny()
    config._attn_implementation = "sdpa"
    decoder = FlexTokDecoder(config).eval()
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.normal_(0, 0.05)
        latents = torch.randn(3, config.latent_channels, config.latent_size, config.latent_size)
        quants = torch.rand(3, config.num_registers, len(config.fsq_levels)) * 2 - 1
        args = (latents, torch.rand(3), quants, torch.tensor([8, 2, 5]), torch.tensor([False, True, False]))
        batched = decoder(*args)[0]
        single = torch.cat([decoder(*(a[i : i + 1] for a in args))[0] for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)
