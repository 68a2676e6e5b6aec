"""The web client end to end: Debian Chromium (headless, driven by Playwright) opens the page served at ``/``,
its fake microphone plays a wav of speech-like audio, and the page must show a spoken answer: answer text in the
transcript and answer audio received (``#stats[data-audio-samples]``).

Needs ``/usr/bin/chromium`` (apt package ``chromium``, installed by ``scripts/setup-system.sh``) and the
``playwright`` pip package (its Node driver ships in the wheel; ``playwright install`` is never run: the browser
is Debian's).
"""

import os

import numpy as np
import pytest
import soundfile as sf

from freeze_omni.server.testing import speech_like, tiny_engine

CHROMIUM = os.environ.get("FREEZE_OMNI_CHROMIUM", "/usr/bin/chromium")
SR = 16000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is missing (apt-get install chromium; see scripts/setup-system.sh)")

# headless, no sandbox (root), and no background traffic: the machine's network may be closed
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
                 "--autoplay-policy=no-user-gesture-required",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

STATS = "() => ({...document.getElementById('stats').dataset})"

ANSWERED = """() => {
  const a = document.querySelector('#transcript .answer');
  const audio = Number(document.getElementById('stats').dataset.audioSamples);
  return !!a && a.textContent.trim().length > 0 && audio > 0;
}"""


def test_browser_hears_a_question_and_shows_a_spoken_answer(bundle, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright is not installed")
    from freeze_omni.server.app import create_app
    from freeze_omni.server.testing import ServerThread

    # 1.5 s of speech then silence: the tiny engine's state head says "answer now" on the first speech chunk; the
    # silence keeps the (looping) fake microphone from barging in before the answer's audio arrives
    wave = np.concatenate([np.zeros(SR // 2, np.float32), speech_like(1.5, seed=3), np.zeros(20 * SR, np.float32)])
    wav = tmp_path / "speech.wav"
    sf.write(wav, wave, SR, subtype="PCM_16")

    engine = tiny_engine(bundle)
    engine.warmup()
    console: list[str] = []
    with ServerThread(create_app(engine)) as srv, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=30000,
                                     args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(srv.http + "/")
            assert page.locator("#state").get_attribute("data-state") == "idle"
            page.click("#start")
            try:
                page.wait_for_function(ANSWERED, timeout=40000, polling=100)
            except sync_api.TimeoutError:
                pytest.fail("no spoken answer in the page: "
                            f"state={page.locator('#state').text_content()!r} "
                            f"error={page.locator('#error').text_content()!r} "
                            f"stats={page.evaluate(STATS)} "
                            f"console={console[-20:]}")
            stats = page.evaluate(STATS)
            answer = page.locator("#transcript .answer").first.text_content()
            assert answer.strip()
            assert int(stats["sentSamples"]) >= SR // 2  # the microphone reached the server as 16 kHz PCM16
            assert int(stats["audioSamples"]) > 0 and int(stats["responses"]) >= 1
            assert page.locator("#state").get_attribute("data-state") in ("thinking", "speaking", "listening",
                                                                         "interrupted")
            assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
            if os.environ.get("FREEZE_OMNI_BROWSER_SHOT"):  # a PNG of the page, to look at
                page.screenshot(path=os.environ["FREEZE_OMNI_BROWSER_SHOT"], full_page=True)
            page.click("#start")  # stop: back to idle
            page.wait_for_function("() => document.getElementById('state').dataset.state === 'idle'", timeout=5000)
        finally:
            browser.close()


def test_the_page_and_its_files_are_served(bundle):
    """Without a browser: / and the static files come from the app (and ship in the package)."""
    import urllib.request

    from freeze_omni.server.app import create_app
    from freeze_omni.server.testing import ServerThread

    engine = tiny_engine(bundle)
    with ServerThread(create_app(engine)) as srv:
        for path, needle in (("/", b'id="transcript"'), ("/static/app.js", b"session.update"),
                             ("/static/worklet.js", b"registerProcessor"), ("/static/style.css", b".state")):
            with urllib.request.urlopen(srv.http + path, timeout=10) as r:
                assert r.status == 200 and needle in r.read(), path
