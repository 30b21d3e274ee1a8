"""FlexTokModel: parity with the official code (fixture), masks, save/load, dtypes, errors, training."""

import math

import pytest
import torch

from flextok_hf import FlexTokConfig, FlexTokModel
from flextok_hf.modeling_flextok import prefix_lm_mask
from flextok_hf.quantizer_fsq import FlexTokFSQ
from flextok_test_utils import converted_fixture_model, random_images, reference, tiny_model

ATOL = 1e-4


def _max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


# --------------------------------------------------------------------------------------------------------------------
# Parity with the official implementation
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_model():
    return converted_fixture_model()


def test_tokenization_parity(fixture_model):
    ref = reference()
    with torch.no_grad():
        encoded = fixture_model.encode(ref["images"])
    assert torch.equal(encoded.token_ids, ref["token_ids"])
    assert _max_diff(encoded.latents, ref["vae_latents"]) < ATOL
    assert _max_diff(encoded.pre_quant, ref["pre_quant"]) < ATOL
    assert torch.equal(encoded.quants, ref["quants"])
    tokens = fixture_model.tokenize(ref["images"])
    assert len(tokens) == 4 and all(torch.equal(t, r) for t, r in zip(tokens, ref["token_ids"]))


def test_encoder_mask_matches_official():
    ref = reference()
    mask = prefix_lm_mask(16, 32)
    assert torch.equal(mask, ref["dbg_enc_mask_sample0"].bool())


def test_decoder_velocity_parity(fixture_model):
    ref = reference()
    args = (ref["dec_x_t"], ref["dec_t"], ref["quants"], ref["dec_keep_k"])
    with torch.no_grad():
        v_cond = fixture_model.predict_velocity(*args)
        v_uncond = fixture_model.predict_velocity(*args, null_condition_mask=torch.ones(4, dtype=torch.bool))
        registers = fixture_model.decoder.embed_registers(ref["quants"], ref["dec_keep_k"], None)
        temb = fixture_model.decoder.time_embed(ref["dec_t"])
    assert _max_diff(registers, ref["dbg_dec_registers_in"]) < ATOL
    assert _max_diff(temb, ref["dbg_dec_temb"]) < ATOL
    assert _max_diff(v_cond, ref["dec_v_cond"]) < ATOL
    assert _max_diff(v_uncond, ref["dec_v_uncond"]) < ATOL


@pytest.mark.parametrize("guidance", [1, 3])
def test_detokenization_parity(fixture_model, guidance):
    ref = reference()
    token_ids = [ref["token_ids"][i, :k] for i, k in enumerate(ref["detok_keep_k"].tolist())]
    kwargs = dict(num_inference_steps=4, guidance_scale=float(guidance), adaptive_guidance=True, progress_bar=False)
    states = []
    latents = fixture_model.detokenize(
        token_ids,
        latents=ref["detok_init_noise"].clone(),
        output_type="latent",
        callback_on_step_end=lambda i, t, x: states.append(x.clone()),
        **kwargs,
    )
    assert _max_diff(latents, ref[f"detok_g{guidance}_latents"]) < ATOL
    assert _max_diff(torch.stack(states), ref[f"detok_g{guidance}_x_steps"][1:]) < ATOL
    images = fixture_model.decode_latents(latents)
    assert _max_diff(images, ref[f"detok_g{guidance}_images"]) < ATOL
    # The official sampler draws one (1, C, h, w) noise per sample from the generator, in order.
    from_generator = fixture_model.detokenize(token_ids, generator=torch.Generator().manual_seed(1234), **kwargs)
    assert _max_diff(from_generator, ref[f"detok_g{guidance}_images"]) < ATOL


def test_training_forward_parity(fixture_model):
    ref = reference()
    fixture_model.train()
    try:
        output = fixture_model(
            pixel_values=ref["images"],
            noise=ref["train_noise"],
            sigmas=ref["train_sigmas"],
            keep_k=ref["train_keep_k"],
            null_condition_mask=ref["train_nullcond_dropped"].bool(),
        )
    finally:
        fixture_model.eval()
    assert _max_diff(output.velocity, ref["train_v_pred"]) < ATOL
    assert abs(output.loss.item() - ref["train_loss"].item()) < ATOL
    assert output.loss is output[0]
    assert torch.equal(output.token_ids, ref["token_ids"])


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------
def test_fsq_worked_example_and_round_trip():
    fsq = FlexTokFSQ([8, 8, 8, 5, 5, 5])
    codes = torch.tensor([[-0.5, -1.0, 0.0, 0.5, 0.5, 0.5]])
    assert fsq.codes_to_ids(codes).item() == 47874
    ids = torch.arange(64000)
    assert torch.equal(fsq.codes_to_ids(fsq.ids_to_codes(ids)), ids)
    levels = fsq.ids_to_codes(ids)
    assert levels[:, 0].max().item() == 0.75 and levels[:, 0].min().item() == -1.0  # asymmetric even grid
    assert levels[:, 5].max().item() == 1.0
    # Straight-through rounding passes gradients.
    z = torch.randn(3, 6, requires_grad=True)
    fsq(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_prefix_lm_mask_semantics():
    """Changing register j changes no encoder output before j nor any patch output; a patch changes every register."""
    model = tiny_model()
    encoder = model.encoder
    captured = {}
    hook = encoder.layers[-1].register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
    latents = random_images(2, 16)
    num_patches = model.config.num_patches

    def run():
        with torch.no_grad():
            encoder(latents)
        return captured["out"].clone()

    base = run()
    j = 5
    with torch.no_grad():
        encoder.registers[j].add_(1.0)
    changed = run()
    with torch.no_grad():
        encoder.registers[j].sub_(1.0)
    delta = (changed - base).abs().amax(dim=(0, 2))
    assert torch.all(delta[: num_patches + j] == 0)
    assert torch.all(delta[num_patches + j :] > 0)

    latents[:, :, 0, 0] += 1.0  # inside patch 0 only
    delta = (run() - base).abs().amax(dim=(0, 2))
    assert torch.all(delta[num_patches:] > 0)
    hook.remove()


def test_nested_dropout_slots_get_mask_token():
    model = tiny_model()
    quants = model.quantizer.ids_to_codes(torch.randint(0, 64000, (2, 8)))
    keep_k = torch.tensor([3, 8])
    with torch.no_grad():
        registers = model.decoder.embed_registers(quants, keep_k, None)
        nulls = model.decoder.embed_registers(quants, keep_k, torch.tensor([True, False]))
    assert torch.allclose(registers[0, 3:], model.decoder.mask_token.expand(5, -1))
    assert not torch.allclose(registers[1, 3], model.decoder.mask_token)
    assert torch.allclose(nulls[0], model.decoder.null_condition.expand(8, -1))
    assert torch.allclose(nulls[1], registers[1])


def test_mixed_budgets_in_one_batch_equal_one_by_one():
    model = tiny_model()
    ids = model.tokenize(random_images(3, 16))
    token_ids = [ids[0][:1], ids[1][:4], ids[2]]
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    kwargs = dict(num_inference_steps=3, guidance_scale=2.0, adaptive_guidance=True, progress_bar=False)
    batched = model.detokenize(token_ids, latents=noise, **kwargs)
    for i in range(3):
        single = model.detokenize([token_ids[i]], latents=noise[i : i + 1], **kwargs)
        assert _max_diff(batched[i : i + 1], single) < 1e-5


def test_guidance_scale_one_runs_unguided_and_callable_scale():
    model = tiny_model()
    ids = model.tokenize(random_images(1, 16))
    noise = torch.randn(1, 3, 16, 16)
    plain = model.detokenize(ids, latents=noise, num_inference_steps=2, guidance_scale=1.0, progress_bar=False)
    as_callable = model.detokenize(
        ids, latents=noise, num_inference_steps=2, guidance_scale=lambda t: 1.0, progress_bar=False
    )
    cfg = model.detokenize(
        ids, latents=noise, num_inference_steps=2, guidance_scale=4.0, adaptive_guidance=False, progress_bar=False
    )
    assert torch.allclose(plain, as_callable, atol=1e-5)
    assert not torch.allclose(plain, cfg, atol=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# transformers integration
# --------------------------------------------------------------------------------------------------------------------
def test_save_pretrained_automodel_round_trip(tmp_path, fixture_model):
    from transformers import AutoModel

    ref = reference()
    fixture_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = AutoModel.from_pretrained(tmp_path, use_safetensors=True).eval()
    assert isinstance(loaded, FlexTokModel)
    assert torch.equal(loaded.encode(ref["images"]).token_ids, ref["token_ids"])
    args = (ref["dec_x_t"], ref["dec_t"], ref["quants"], ref["dec_keep_k"])
    with torch.no_grad():
        assert torch.equal(loaded.predict_velocity(*args), fixture_model.predict_velocity(*args))


def test_bf16_loading_keeps_vae_in_fp32(tmp_path, fixture_model):
    ref = reference()
    fixture_model.save_pretrained(tmp_path)
    model = FlexTokModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert model.encoder.layers[0].attn.q_proj.weight.dtype == torch.bfloat16
    assert model.vae.encoder.conv_in.weight.dtype == torch.float32
    tokens = model.encode(ref["images"]).token_ids
    assert tokens.shape == (4, 32)
    agreement = (tokens == ref["token_ids"]).float().mean().item()
    assert agreement > 0.5  # bf16 moves a few ids across FSQ rounding boundaries
    images = model.detokenize(list(tokens), num_inference_steps=2, guidance_scale=3.0, progress_bar=False)
    assert images.dtype == torch.float32 and torch.isfinite(images).all()


def test_eager_and_sdpa_attention_agree():
    model = tiny_model()
    images = random_images(2, 16)
    ids = model.tokenize(images)
    noise = torch.randn(2, 3, 16, 16)
    out_sdpa = model.detokenize(ids, latents=noise, num_inference_steps=2, progress_bar=False)
    model.set_attn_implementation("eager")
    assert torch.equal(torch.stack(model.tokenize(images)), torch.stack(ids))
    out_eager = model.detokenize(ids, latents=noise, num_inference_steps=2, progress_bar=False)
    assert _max_diff(out_sdpa, out_eager) < 1e-5


def test_gradient_checkpointing_gives_same_gradients():
    images = random_images(2, 16)
    draws = dict(
        noise=torch.randn(2, 3, 16, 16),
        sigmas=torch.tensor([0.3, 0.7]),
        keep_k=torch.tensor([2, 8]),
        null_condition_mask=torch.tensor([False, True]),
    )
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert any(getattr(layer, "gradient_checkpointing", False) for layer in model.decoder.layers)
        model(pixel_values=images, **draws).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_training_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    model = FlexTokModel(FlexTokConfig.tiny()).train()
    images = random_images(8, 16, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        loss = model(pixel_values=images, generator=generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_forward_replay_and_generator_determinism():
    model = tiny_model().train()
    images = random_images(4, 16)
    a = model(pixel_values=images, generator=torch.Generator().manual_seed(5))
    b = model(pixel_values=images, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.keep_k, b.keep_k)
    replay = model(
        pixel_values=images, noise=a.noise, sigmas=a.sigmas, keep_k=a.keep_k, null_condition_mask=a.null_condition_mask
    )
    assert torch.equal(replay.loss, a.loss)
    model.eval()
    evaluated = model(pixel_values=images, generator=torch.Generator().manual_seed(5))
    assert torch.all(evaluated.keep_k == 8) and not evaluated.null_condition_mask.any()
    no_loss = model(pixel_values=images, return_loss=False)
    assert no_loss.loss is None and no_loss.velocity.shape == (4, 3, 16, 16) and no_loss.token_ids.shape == (4, 8)


@pytest.mark.parametrize(
    "mode,allowed", [("pow2", {1, 2, 4, 8}), ("uniform_pow2", {1, 2, 4, 8}), ("uniform", set(range(1, 9)))]
)
def test_nested_dropout_modes(mode, allowed):
    model = tiny_model(nested_dropout_mode=mode)
    keep_k = model.sample_keep_k(4000, torch.Generator().manual_seed(0))
    values = set(keep_k.tolist())
    assert values <= allowed and len(values) == len(allowed)
    if mode == "uniform_pow2":  # P(8) = 1/2, P(4) = 1/4 for K = 8
        assert abs((keep_k == 8).float().mean().item() - 0.5) < 0.03
        assert abs((keep_k == 4).float().mean().item() - 0.25) < 0.03


def test_vae_model_latents_and_posterior_sampling():
    vae_config = dict(
        block_out_channels=[8, 16],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
    )
    config = FlexTokConfig.tiny(image_size=32, patch_size=2, vae_config=vae_config, vae_scaling_factor=2.0)
    assert config.latent_size == 16 and config.latent_channels == 4
    model = FlexTokModel(config).eval()
    images = random_images(2, 32)
    assert model.encode_latents(images).shape == (2, 4, 16, 16)
    assert model.detokenize(model.tokenize(images), num_inference_steps=1, progress_bar=False).shape == (2, 3, 32, 32)
    sampled = FlexTokModel(FlexTokConfig.tiny(**{**config.to_diff_dict(), "vae_sample_posterior": True})).eval()
    sampled.load_state_dict(model.state_dict())
    first = sampled.encode_latents(images, generator=torch.Generator().manual_seed(0))
    again = sampled.encode_latents(images, generator=torch.Generator().manual_seed(0))
    other = sampled.encode_latents(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_preset_parameter_counts_match_docstring():
    doc = FlexTokConfig.__doc__.replace(",", "")
    for name in ("d12_d12", "d18_d18", "d18_d28"):
        with torch.device("meta"):
            model = FlexTokModel(getattr(FlexTokConfig, name)())
        count = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.vae.parameters())
        assert f"{name}()`: {count} " in doc, (name, count)
    assert math.prod(FlexTokConfig.d18_d28().fsq_levels) == 64000


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="pixel_values.*16"):
        model.tokenize(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="pixel_values"):
        model.tokenize(torch.zeros(1, 4, 16, 16))
    with pytest.raises(TypeError, match="pixel_values"):
        model.tokenize([[0.0]])
    with pytest.raises(ValueError, match=r"token_ids\[0\].*\[0, 64000\)"):
        model.detokenize([[70000]], progress_bar=False)
    with pytest.raises(ValueError, match=r"token_ids\[1\].*1 to 8"):
        model.detokenize([[1], list(range(9))], progress_bar=False)
    with pytest.raises(ValueError, match=r"token_ids\[0\].*1 to 8"):
        model.detokenize([[]], progress_bar=False)
    with pytest.raises(ValueError, match="token_ids"):
        model.detokenize([], progress_bar=False)
    with pytest.raises(TypeError, match="token_ids"):
        model.detokenize([torch.tensor([0.5])], progress_bar=False)
    with pytest.raises(ValueError, match="num_inference_steps"):
        model.detokenize([[1]], num_inference_steps=0, progress_bar=False)
    with pytest.raises(TypeError, match="num_inference_steps"):
        model.detokenize([[1]], num_inference_steps=2.5, progress_bar=False)
    with pytest.raises(ValueError, match="nested_dropout_mode"):
        FlexTokConfig.tiny(nested_dropout_mode="geometric")
    with pytest.raises(ValueError, match="encoder_hidden_size"):
        FlexTokConfig.tiny(encoder_hidden_size=70)
    with pytest.raises(TypeError, match="image_size"):
        FlexTokConfig.tiny(image_size="16")
    with pytest.raises(ValueError, match="image_size"):
        FlexTokConfig.tiny(image_size=18)
