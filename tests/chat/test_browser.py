"""End to end in a real browser: the demo on 127.0.0.1, Debian's Chromium driven by Playwright.

Uploads an image, asks a question, waits for the streamed answer in the chatbot and takes a
screenshot: into the test's temporary folder (tests never change tracked files), or to the path in
TINYGPT_SCREENSHOT (`TINYGPT_SCREENSHOT=docs/demo.png` refreshes the README's picture).  Uses the quickstart model when `bash quickstart.sh` has
made it, else the tiny random model.  Needs /usr/bin/chromium (`apt-get install -y chromium`);
no browser download.
"""
from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# The README's picture and a question the quickstart model answers right about it ("purple").
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "images" / "example.png"
QUESTION = "[vqa] what color is the triangle?"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"),
]


def demo_chat(inst_model, make_chat):
    """The quickstart model when it exists (a meaningful screenshot), else the tiny random one."""
    from tinygpt.conversation import GenerationOptions
    from tinygpt.serve import main as serve_main

    if os.path.exists(serve_main.DEFAULT_CONFIG) and os.path.exists(serve_main.DEFAULT_CHECKPOINT):
        chat = serve_main.load_chat(serve_main.DEFAULT_CONFIG, ["run.device=cpu"], GenerationOptions(max_new_tokens=40))
        return chat, QUESTION
    chat = make_chat(inst_model)
    chat.defaults = chat.defaults.replace(max_new_tokens=64, min_new_tokens=64)  # long enough to see it stream
    return chat, QUESTION


def ask(page, question) -> list[str]:
    """Send `question` (None: what the text box holds), wait until the streamed answer is complete;
    returns the successive texts the answer bubble showed."""
    from playwright.sync_api import expect

    bots = page.locator("#tinygpt-chatbot .message.bot")
    before = bots.count()
    page.evaluate("""() => {
        window.__shown = [];
        const root = document.querySelector('#tinygpt-chatbot');
        new MutationObserver(() => {
            const bots = root.querySelectorAll('.message.bot');
            if (bots.length) window.__shown.push(bots[bots.length - 1].innerText);
        }).observe(root, {subtree: true, childList: true, characterData: true});
    }""")
    if question is not None:
        page.locator("#tinygpt-text textarea").fill(question)
    page.locator("#tinygpt-send").click()
    expect(bots).to_have_count(before + 1, timeout=60_000)
    expect(bots.last).not_to_have_text("", timeout=120_000)  # the first streamed words arrived
    # The chatbot's status tracker is hidden again once the answer is complete.
    expect(page.locator("#tinygpt-chatbot > [data-testid=status-tracker]")).to_have_class(
        re.compile(r"\bhide\b"), timeout=120_000)
    expect(page.locator("#tinygpt-text textarea")).to_have_value("")
    return page.evaluate("() => window.__shown")


def _visible(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable() and not ch.isspace())


def test_browser_chat(inst_model, make_chat, serve, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tinygpt.serve.app import build_app
    from tinygpt.serve.ui import synthetic_examples

    chat, question = demo_chat(inst_model, make_chat)
    examples = synthetic_examples(instruct=chat.style.instruct)
    picture = str(EXAMPLE)
    with serve(build_app(chat, examples=examples)) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url + "/", wait_until="domcontentloaded")
            page.locator("#tinygpt-image input[type=file]").set_input_files(picture)
            # the upload handler ran when the image appears on the "Boxes" panel
            expect(page.locator("#tinygpt-boxes img")).to_be_visible(timeout=60_000)
            texts = ask(page, question)
            shown = page.locator("#tinygpt-chatbot .message.bot").last.inner_text()
            grew = [t for i, t in enumerate(texts) if t.strip() and (i == 0 or t != texts[i - 1])]
            assert len(set(grew)) >= 2, f"the answer did not stream: {grew}"
            assert question in page.locator("#tinygpt-chatbot .message.user").last.inner_text()
            # The page's answer is the API's answer to the same image and question (greedy, one Chat path).
            api = httpx.post(server.url + "/worker_generate", timeout=120, json={
                "input_text": question, "image": base64.b64encode(Path(picture).read_bytes()).decode()})
            assert _visible(shown) == _visible(api.json()["text"])

            # [identify] with a box typed into the box fields: the box goes into the question.
            page.locator("#tinygpt-tag-identify").click()
            expect(page.locator("#tinygpt-text textarea")).to_have_value("[identify] ")
            for name, value in zip(("x1", "y1", "x2", "y2"), (70, 72, 95, 95)):  # the purple triangle
                page.locator(f"#tinygpt-{name} input").fill(str(value))
            ask(page, None)
            assert "{<70><72><95><95>}" in page.locator("#tinygpt-chatbot .message.user").last.inner_text()
            expect(page.locator("#tinygpt-chatbot .message.bot")).to_have_count(2)

            screenshot = Path(os.environ.get("TINYGPT_SCREENSHOT") or tmp_path / "demo.png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
