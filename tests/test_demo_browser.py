"""The demo page in a real headless Chromium (playwright + Debian's /usr/bin/chromium): upload, slider, run; the
Tokenize tab's gallery filling budget by budget and its auto k; the Generate tab's previews sharpening."""

import os
import re
import socket
import time

import PIL.Image
import pytest
import torch

from flextok_hf import FlexTokClassToImagePipeline, FlexTokPipeline
from flextok_hf.demo import build_demo, launch_demo
from flextok_test_utils import tiny_model, tiny_prior

pytestmark = pytest.mark.slow  # a real headless Chromium

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000
DECODE_DELAY = 0.3  # seconds per decode, so that the page has time to show each streamed update
# Records the number of gallery thumbnails (and their captions) each time the gallery changes.
RECORD_GALLERY = """
([selector, key]) => {
    window[key] = [];
    new MutationObserver(() => {
        const captions = Array.from(document.querySelectorAll(selector + ' .caption-label')).map(e => e.innerText);
        const last = window[key][window[key].length - 1];
        if (!last || last.join('|') !== captions.join('|')) window[key].push(captions);
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}
"""


class SlowPipeline(FlexTokPipeline):
    """The real pipeline, with a pause before each decode (the tiny model decodes faster than a page repaints)."""

    def detokenize(self, *args, **kwargs):
        time.sleep(DECODE_DELAY)
        return super().detokenize(*args, **kwargs)


class SlowClassPipeline(FlexTokClassToImagePipeline):
    def detokenize(self, *args, **kwargs):
        time.sleep(DECODE_DELAY)
        return super().detokenize(*args, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return SlowPipeline.from_flextok(tiny_model(fsq_levels=[8, 5, 5, 5]), num_inference_steps=2, guidance_scale=1.5)


@pytest.fixture(scope="module")
def class_pipe(pipe):
    prior = tiny_prior(pipe.flextok, "class")
    return SlowClassPipeline.from_components(prior, pipe.flextok, num_inference_steps=2, decoder_guidance_scale=1.5)


@pytest.fixture(scope="module")
def server(pipe, class_pipe):
    example = PIL.Image.radial_gradient("L").convert("RGB")
    demo = build_demo(pipe, class_pipe, examples=[("gradient", example)])
    try:
        _, url, _ = launch_demo(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
        yield url
    finally:
        demo.close()


@pytest.fixture()
def browser():
    if not os.path.isfile(CHROMIUM):
        pytest.fail(f"Chromium is missing ({CHROMIUM}): run `apt-get install chromium` (the .ci/run script does).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_tokenize_tab_in_chromium(server, browser, pipe, tmp_path):
    upload = tmp_path / "input.png"
    PIL.Image.linear_gradient("L").resize((48, 40)).convert("RGBA").save(upload)
    budgets = pipe.default_budgets()  # 1, 2, 4, 8

    page = browser.new_page(viewport={"width": 1280, "height": 1500})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    page.locator("#tok-input input[type=file]").set_input_files(str(upload))
    page.wait_for_selector("#tok-input img")

    slider = page.locator("#tok-budget input[type=range]")
    slider.fill("2")
    slider.dispatch_event("pointerup")
    assert page.locator("#tok-budget input[type=number]").input_value() == "2"

    page.click("#tok-run")
    page.wait_for_function(
        "n => { const imgs = document.querySelectorAll('#tok-gallery .thumbnail-item img');"
        " return imgs.length >= n && Array.from(imgs).every(i => i.complete && i.naturalWidth > 0); }",
        arg=len(budgets),
    )
    assert page.locator("#tok-gallery .thumbnail-item img").count() == len(budgets)
    captions = page.locator("#tok-gallery .caption-label").all_inner_texts()
    assert [int(caption.split(" ")[0].removeprefix("k=")) for caption in captions] == budgets
    page.wait_for_function(
        "() => { const i = document.querySelector('#tok-recon img'); return i && i.naturalWidth > 0; }"
    )

    page.get_by_text("Token ids and PSNR").click()  # the handler saw the slider's value
    page.wait_for_function(  # the accordion renders its content after the click
        "() => { const e = document.querySelector('#tok-ids'); return e && /num_tokens/.test(e.innerText); }"
    )
    assert re.search(r'"num_tokens"\s*:\s*2\b', page.locator("#tok-ids").inner_text())

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    with PIL.Image.open(shot) as image:
        assert image.size[0] == 1280 and image.size[1] >= 800


def test_tokenize_tab_streams_and_picks_k_automatically(server, browser, pipe, tmp_path):
    upload = tmp_path / "input.png"
    PIL.Image.linear_gradient("L").resize((40, 40)).convert("RGB").save(upload)
    budgets = pipe.default_budgets()  # 1, 2, 4, 8
    target = 5.0  # the slider's minimum (its step is 0.5 dB)
    expected = pipe(
        PIL.Image.open(upload),
        num_tokens="auto",
        quality_target=target,
        search_num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    ).num_tokens[0]

    page = browser.new_page(viewport={"width": 1280, "height": 1500})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    page.locator("#tok-input input[type=file]").set_input_files(str(upload))
    page.wait_for_selector("#tok-input img")
    page.locator("#tok-mode").get_by_text("auto", exact=True).click()
    page.locator("#tok-target input[type=range]").fill(str(target))
    page.locator("#tok-target input[type=range]").dispatch_event("change")
    assert float(page.locator("#tok-target input[type=number]").input_value()) == target
    page.evaluate(RECORD_GALLERY, ["#tok-gallery", "tokenizeGallery"])

    page.click("#tok-run")
    page.wait_for_function(
        "n => document.querySelectorAll('#tok-gallery .caption-label').length >= n", arg=len(budgets)
    )
    page.wait_for_function("() => /auto k/.test(document.querySelector('#tok-gallery').innerText)")
    # the gallery filled budget by budget: the page showed 1, 2 and 3 reconstructions before all 4
    counts = [len(captions) for captions in page.evaluate("window.tokenizeGallery")]
    assert {1, 2, 3} <= set(counts) and counts[-1] == len(budgets)
    # auto k: the slider moved to the pipeline's choice, and the gallery marks that budget
    page.wait_for_function(
        "k => document.querySelector('#tok-budget input[type=number]').value === String(k)", arg=expected
    )
    captions = page.locator("#tok-gallery .caption-label").all_inner_texts()
    assert [int(c.split(" ")[0].removeprefix("k=")) for c in captions if "auto k" in c] == [expected]


def test_generate_tab_previews_sharpen_into_the_final_images(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1500})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    page.get_by_role("tab", name="Generate").click()
    page.wait_for_selector("#gen-run")
    page.evaluate(RECORD_GALLERY, ["#gen-gallery", "generateGallery"])
    page.click("#gen-run")
    page.wait_for_function(  # the final images: 4 captions "#i · 8 tokens"
        "() => { const c = Array.from(document.querySelectorAll('#gen-gallery .caption-label'));"
        " return c.length === 4 && c.every(e => /· 8 tokens$/.test(e.innerText)); }"
    )
    shown = [captions[0] for captions in page.evaluate("window.generateGallery") if captions]
    previews = [caption for caption in shown if caption.endswith("· preview")]
    assert previews == ["#0 · 1 token of 8 · preview", "#0 · 2 tokens of 8 · preview", "#0 · 4 tokens of 8 · preview"]
    assert shown[-1] == "#0 · 8 tokens"
