"""Headless Chromium on the host double's page: Send to SadTalker from the txt2img gallery lands on the tab
with the image, Generate renders a short clip with synthetic weights, the video element appears, and the
host progress bar was fed. Screenshot: ci-artifacts/sadtalker_tab.png."""

from __future__ import annotations

import shutil
import time

import pytest

from host_double import REPO
from host_double.fixtures import free_port, make_host  # noqa: F401
from test_api import MEDIA, _short_audio

pytestmark = [pytest.mark.host, pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT = REPO / "ci-artifacts" / "sadtalker_tab.png"


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium / chromedriver not installed (bash tools/setup.sh --browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1300"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except Exception:  # the DOM is still being rebuilt
            value = None
        if value:
            return value
        time.sleep(0.3)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    driver.save_screenshot(str(SCREENSHOT.with_name("sadtalker_tab_failure.png")))
    raise AssertionError(f"timed out waiting for {what}")


def test_send_to_sadtalker_then_generate(make_host, browser, tmp_path, checkpoints_256):
    from selenium.webdriver.common.by import By

    host = make_host(gallery_images={"txt2img": [str(MEDIA / "happy.png")]},
                     config={"sadtalker_checkpoint_dir": str(checkpoints_256),
                             "sadtalker_outdir": str(tmp_path / "videos")})
    host.load_scripts()
    host.create_ui()
    url = host.launch(free_port())
    driver = browser
    driver.get(url)
    js = driver.execute_script
    _wait(driver, lambda: js("return typeof switch_to_sadtalker === 'function' && "
                             "!!gradioApp().querySelector('#txt2img_send_to_sadtalker')"), 60, "the page")
    _wait(driver, lambda: js("return gradioApp().querySelectorAll('#txt2img_gallery img').length > 0"), 60,
          "the txt2img gallery image")
    js("gradioApp().querySelector('#txt2img_send_to_sadtalker').click()")
    _wait(driver, lambda: js("var t = gradioApp().querySelector('#tab_sadtalker');"
                             "return t && t.offsetParent !== null"), 30, "the SadTalker tab to open")
    _wait(driver, lambda: js("return !!gradioApp().querySelector('#sadtalker_source_image img')"), 60,
          "the sent image in the source image box")
    audio = _short_audio(tmp_path, 0.12)
    upload = _wait(driver, lambda: driver.find_element(By.CSS_SELECTOR, "#sadtalker_audio input[type=file]"), 30,
                   "the audio upload input")
    upload.send_keys(str(audio))
    _wait(driver, lambda: js("return !!gradioApp().querySelector('#sadtalker_audio audio, #sadtalker_audio "
                             "[data-testid=waveform-x], #sadtalker_audio .waveform-container')"), 60,
          "the uploaded audio")
    js("gradioApp().querySelector('#sadtalker_advanced .label-wrap').click()")  # open "Advanced"
    _wait(driver, lambda: js("return !!gradioApp().querySelector('#sadtalker_face_detector input[value=dlib]')"),
          20, "the face detector choice")
    js("gradioApp().querySelector('#sadtalker_face_detector input[value=dlib]').click()")
    _wait(driver, lambda: js("return gradioApp().querySelector('#sadtalker_face_detector input[value=dlib]')"
                             ".checked"), 10, "face detector = dlib")
    js("gradioApp().querySelector('#sadtalker_generate').click()")
    src = _wait(driver, lambda: js("var v = gradioApp().querySelector('#sadtalker_result video');"
                                   "return v && v.getAttribute('src')"), 900, "the result video")
    info = js("return gradioApp().querySelector('#sadtalker_info').innerText")
    assert "Time taken" in info and "Saved" in info, info
    assert js("return (window.hostProgressSeen || []).length") > 0  # the host progress bar was polled
    saved = list((tmp_path / "videos").rglob("*.mp4"))
    assert len(saved) == 1 and saved[0].with_suffix(".json").is_file() and src
    # the browser can decode the clip: the first frame is there
    _wait(driver, lambda: js("return gradioApp().querySelector('#sadtalker_result video').readyState >= 2"), 60,
          "the result video to load")
    js("window.scrollTo(0, 0)")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    driver.save_screenshot(str(SCREENSHOT))
