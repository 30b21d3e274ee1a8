"""The demo page in a real headless Chromium (playwright + Debian's /usr/bin/chromium): upload, slider, run."""

import os
import re
import socket

import PIL.Image
import pytest
import torch

from flextok_hf import FlexTokPipeline
from flextok_hf.demo import build_demo, launch_demo
from flextok_test_utils import tiny_model

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return FlexTokPipeline.from_flextok(tiny_model(fsq_levels=[8, 5, 5, 5]), num_inference_steps=2, guidance_scale=1.5)


@pytest.fixture(scope="module")
def server(pipe):
    example = PIL.Image.radial_gradient("L").convert("RGB")
    demo = build_demo(pipe, examples=[("gradient", example)])
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
