"""Headless Chromium on a REAL WebUI (the host of this session: $SADTALKER_REAL_HOST, see conftest.py), as a user
clicks it: the SadTalker tab renders without errors from our javascript/, "Send to SadTalker" sits beside the
txt2img / img2img galleries' send-to buttons and a gallery image sent with it lands in the tab, upload +
Generate gives a video the browser decodes while the host's progress bar runs, and face restoration works
with the host's own spandrel.

How the galleries are filled without a Stable Diffusion model: the host's own "Custom code" script (builtin,
shown with the host flag --allow-code) run by the host's own txt2img / img2img Generate button. Its code hands
a picture to the host's ``display()`` instead of sampling, so the picture reaches the gallery through the
host's script runner, ``Processed`` and output panel exactly as a generated one does; the send-to buttons, the
gallery JS (``extract_image_from_gallery``) and the paste binding are the real ones. txt2img shows a file
(a test picture); img2img shows the init image uploaded into its own image box (``p.init_images``).

Screenshots: ci-artifacts/real_<host>_*.png (looked at by hand; the tests check the DOM).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from realhost_support import REPO, data_url, http

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MEDIA = REPO.parent / "shared" / "media"
PORTRAIT = MEDIA / "happy.png"
ARTIFACTS = REPO / "ci-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CODE_FLAG = "--allow-code"  # shows the host's builtin "Custom code" script (see the module docstring)
#: what the host's Custom code script runs in each tab: a picture for the gallery, no sampling
#: pictures of different sizes, so the source box shows which one arrived
GALLERY_PICTURE = {"txt2img": MEDIA / "art_7.png", "img2img": MEDIA / "art_0.png"}
GALLERY_CODE = {
    "txt2img": f"from PIL import Image; display([Image.open({str(GALLERY_PICTURE['txt2img'])!r})])",
    "img2img": "display(list(p.init_images))",
}


@pytest.fixture(scope="module")
def code_host(real_host):
    return real_host.running((CODE_FLAG,))


@pytest.fixture(scope="module")
def host_name(real_host) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", real_host.info.name)


class Page:
    """One Chromium tab on the host, with waits that leave a screenshot when they time out."""

    def __init__(self, driver, host_name: str):
        self.driver, self.host_name = driver, host_name

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def shot(self, step: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"real_{self.host_name}_{step}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait(self, condition, timeout: float, what: str, every=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = condition()
            except Exception:  # noqa: BLE001 - the DOM is being rebuilt by gradio
                value = None
            if value:
                return value
            if every is not None:
                every()
            time.sleep(0.3)
        shot = self.shot(f"timeout_{re.sub(r'[^a-z0-9]+', '_', what.lower())}")
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (screenshot {shot})")

    def find(self, css: str, timeout: float = 30, what: str | None = None):
        from selenium.webdriver.common.by import By

        return self.wait(lambda: [e for e in self.driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()],
                         timeout, what or css)[0]

    def console(self) -> list[dict]:
        return self.driver.get_log("browser")


@pytest.fixture(scope="module")
def page(code_host, host_name, tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium / chromedriver not installed (bash tools/setup.sh --browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # offline machine: names outside 127.0.0.1 fail at once (Forge's page asks a CDN for iframeResizer)
    for flag in ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path_factory.mktemp('chrome')}", "--window-size=1400,1300"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    page = Page(driver, host_name)
    try:
        t0 = time.monotonic()
        driver.get(code_host.url)
        page.wait(lambda: page.js("return typeof gradioApp === 'function' && typeof switch_to_sadtalker === "
                                  "'function' && !!gradioApp().querySelector('#tab_sadtalker')"), 180,
                  "the host page with the SadTalker tab")
        page.load_s = time.monotonic() - t0
        yield page
    finally:
        driver.quit()


def _open_tab(page: Page, tab: str) -> None:
    """Click the host's tab button named ``tab`` (the host's own tab strip)."""
    button = page.wait(lambda: page.js(
        "return Array.from(gradioApp().querySelectorAll('#tabs button')).find(b => b.offsetParent !== null && "
        "b.textContent.trim().toLowerCase() === arguments[0].toLowerCase())", tab), 30,  # Forge: "Txt2img"
        f"the {tab} tab button")
    button.click()
    page.wait(lambda: page.js(f"var t = gradioApp().querySelector('#tab_{tab.lower()}'); return t && t.offsetParent"),
              30, f"the {tab} tab to show")


def _our_console_errors(entries: list[dict]) -> list[dict]:
    """Severe console entries that come from this extension (its scripts, its files, its element ids)."""
    return [e for e in entries if e.get("level") == "SEVERE" and "sadtalker" in e.get("message", "").lower()]


# --- the tab -----------------------------------------------------------------------------------------------

def test_tab_renders_without_errors_from_our_scripts(page, real_host):
    _open_tab(page, "SadTalker")
    for elem_id in ("sadtalker_source_image", "sadtalker_audio", "sadtalker_generate", "sadtalker_interrupt",
                    "sadtalker_result", "sadtalker_advanced", "sadtalker_checkpoint_notice"):
        assert page.js(f"return !!gradioApp().querySelector('#{elem_id}')"), f"#{elem_id} missing in the tab"
    page.shot("tab")
    # the checkpoints the harness put into <data>/models/SadTalker are found: no missing-checkpoint notice
    notice = page.js("return gradioApp().querySelector('#sadtalker_checkpoint_notice').innerText")
    assert "Missing" not in notice, notice
    # our onUiLoaded hook ran (it titles the send-to buttons)
    titles = page.js("return Array.from(gradioApp().querySelectorAll('[id$=_send_to_sadtalker]'))"
                     ".map(b => b.title)")
    assert titles and all("SadTalker" in t for t in titles), titles
    entries = page.console()
    assert not _our_console_errors(entries), _our_console_errors(entries)
    print(f"{real_host.info.name}: page ready in {page.load_s:.1f} s; other console entries:",
          json.dumps([e["message"][:160] for e in entries if e.get("level") == "SEVERE"]))


# --- generate ----------------------------------------------------------------------------------------------

def test_upload_and_generate_gives_a_playable_video_with_the_host_progress_bar(page, real_host, speech_clip):
    _open_tab(page, "SadTalker")
    outputs = real_host.data_dir / "outputs"
    before = set(outputs.rglob("*.mp4")) if outputs.exists() else set()
    page.driver.find_element("css selector", "#sadtalker_source_image input[type=file]").send_keys(str(PORTRAIT))
    page.wait(lambda: page.js("return !!gradioApp().querySelector('#sadtalker_source_image img')"), 30,
              "the uploaded portrait")
    audio = speech_clip(0.2)  # 5 frames at 25 fps
    page.driver.find_element("css selector", "#sadtalker_audio input[type=file]").send_keys(str(audio))
    page.wait(lambda: page.js("return !!gradioApp().querySelector('#sadtalker_audio audio, "
                              "#sadtalker_audio .waveform-container, #sadtalker_audio [data-testid=waveform-x]')"),
              30, "the uploaded audio")
    page.js("gradioApp().querySelector('#sadtalker_advanced .label-wrap').click()")  # open "Advanced"
    dlib = "#sadtalker_face_detector input[value=dlib]"  # offline landmarks (the harness installs dlib-bin)
    page.wait(lambda: page.js(f"return !!gradioApp().querySelector('{dlib}')"), 20, "the face detector choice")
    page.js(f"gradioApp().querySelector('{dlib}').click()")
    page.wait(lambda: page.js(f"return gradioApp().querySelector('{dlib}').checked"), 10, "face detector = dlib")
    page.shot("before_generate")

    bar_texts: list[str] = []
    live_previews: list[list[int]] = []

    def watch_progress():
        # the host's live preview: its progress JS puts the newest rendered frame over the result box
        preview = page.js("var i = gradioApp().querySelector('#sadtalker_result .livePreview img');"
                          "return i && i.complete && [i.naturalWidth, i.naturalHeight]")
        if preview and not live_previews:
            page.shot("live_preview")
        if preview:
            live_previews.append(preview)
        text = page.js("var p = gradioApp().querySelector('#tab_sadtalker .progressDiv');"
                       "return p ? p.innerText.trim() : null")
        if text and (not bar_texts or bar_texts[-1] != text):
            bar_texts.append(text)
            if "render" in text.lower() and not any("render" in t.lower() for t in bar_texts[:-1]):
                page.shot("progress")

    t0 = time.monotonic()
    page.js("gradioApp().querySelector('#sadtalker_generate').click()")
    page.wait(lambda: page.js("var v = gradioApp().querySelector('#sadtalker_result video');"
                              "return v && v.getAttribute('src')"), 900, "the result video", every=watch_progress)
    generate_s = time.monotonic() - t0
    # the browser decodes the clip: its first frame is there
    size = page.wait(lambda: page.js("var v = gradioApp().querySelector('#sadtalker_result video');"
                                     "return v.readyState >= 2 && v.videoWidth > 0 && "
                                     "[v.videoWidth, v.videoHeight, v.duration]"), 60, "the video's first frame")
    page.js("window.scrollTo(0, 0)")
    page.shot("result")
    info = page.js("return gradioApp().querySelector('#sadtalker_info').innerText")
    assert "Saved" in info and "Time taken" in info, info
    new = set(outputs.rglob("*.mp4")) - before
    assert len(new) == 1, new
    saved = new.pop()
    assert saved.name in info and saved.with_suffix(".json").is_file()
    assert size[0] == size[1] == 256 and 0.1 < size[2] < 0.5, size  # crop mode at 256: 256x256, ~0.2 s
    assert any("sadtalker" in t.lower() for t in bar_texts), f"the host progress bar never showed the job: {bar_texts}"
    assert live_previews and live_previews[0] == [256, 256], f"no live preview of the frames: {live_previews}"
    # the host's progress JS removes it at its next poll after the job (the video can arrive first)
    page.wait(lambda: not page.js("return !!gradioApp().querySelector('#sadtalker_result .livePreview')"), 15,
              "the live preview to go after the job")
    entries = page.console()
    assert not _our_console_errors(entries), _our_console_errors(entries)
    stages = list(dict.fromkeys(re.sub(r"\s*ETA.*$", "", t) for t in bar_texts))
    print(f"{real_host.info.name}: Generate -> playable video in {generate_s:.1f} s; bar showed: {stages}")


# --- "Send to SadTalker" -----------------------------------------------------------------------------------

def _fill_gallery_with_custom_code(page: Page, tab: str) -> None:
    """Runs the host's Custom code script from ``tab``'s Script dropdown (see the module docstring)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    page.find(f"#tab_{tab} #script_list input", what=f"the {tab} Script dropdown").click()
    option = page.wait(lambda: [e for e in page.driver.find_elements("css selector", f"#tab_{tab} #script_list li")
                                if e.text.strip() == "Custom code"], 20,
                       f"'Custom code' among the {tab} scripts (the host was started with {CODE_FLAG})")[0]
    option.click()
    editor = page.find(f"#tab_{tab} .cm-content", what=f"the {tab} Custom code editor")
    editor.click()
    ActionChains(page.driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL) \
        .send_keys(Keys.DELETE).perform()
    editor.send_keys(GALLERY_CODE[tab])
    page.wait(lambda: GALLERY_CODE[tab] in editor.text, 10, f"the code in the {tab} editor")
    page.js(f"gradioApp().querySelector('#{tab}_generate').click()")
    page.wait(lambda: page.js(f"return gradioApp().querySelectorAll('#{tab}_gallery img').length > 0"), 120,
              f"the picture in the {tab} gallery")


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_send_to_sadtalker_beside_the_gallery_buttons_and_the_image_arrives(page, tab):
    _open_tab(page, tab)
    siblings = page.js(f"var b = gradioApp().querySelector('#{tab}_send_to_sadtalker');"
                       "return b && Array.from(b.parentElement.children).map(c => c.id)")
    assert siblings, f"no #{tab}_send_to_sadtalker button"
    assert f"{tab}_send_to_extras" in siblings and f"{tab}_send_to_img2img" in siblings, siblings
    assert page.js(f"return gradioApp().querySelector('#{tab}_send_to_sadtalker').offsetParent !== null")
    if tab == "img2img":  # img2img's script needs an init image: the user's upload into img2img's image box
        page.driver.find_element("css selector", "#img2img_image input[type=file]").send_keys(
            str(GALLERY_PICTURE[tab]))
        # gradio's image box (A1111) or Forge's canvas (an <img> inside its own HTML block) shows the upload
        page.wait(lambda: page.js("return Array.from(gradioApp().querySelectorAll('#img2img_image img'))"
                                  ".some(i => i.complete && i.naturalWidth > 0)"), 30, "the init image in img2img")
    _fill_gallery_with_custom_code(page, tab)
    page.js(f"gradioApp().querySelector('#{tab}_gallery').scrollIntoView({{block: 'center'}})")
    page.shot(f"{tab}_gallery")
    page.js(f"gradioApp().querySelector('#{tab}_send_to_sadtalker').click()")
    page.wait(lambda: page.js("var t = gradioApp().querySelector('#tab_sadtalker'); return t && t.offsetParent"),
              30, "the SadTalker tab to open after the click")
    from PIL import Image

    with Image.open(GALLERY_PICTURE[tab]) as picture:
        expected = list(picture.size)
    # the source box held another picture (the portrait of the generate test, or the other tab's): it now
    # shows the gallery's, recognised by its size
    page.wait(lambda: page.js("var i = gradioApp().querySelector('#sadtalker_source_image img');"
                              "return i && i.complete && [i.naturalWidth, i.naturalHeight]") == expected,
              60, f"the {tab} gallery picture ({expected[0]}x{expected[1]}) in the source image box")
    page.js("window.scrollTo(0, 0)")
    page.shot(f"{tab}_sent")


# --- face restoration with the host's spandrel ---------------------------------------------------------------

def _synthetic_gfpgan(path: Path) -> None:
    """A GFPGANv1Clean (the v1.4 architecture, built by spandrel's own class) with random weights, saved like
    GFPGANv1.4.pth by the current torch; noise strengths raised from 0 as trained ones are."""
    import torch

    from sadtalker_core.render.enhance import import_spandrel

    import_spandrel()
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                   fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    state = model.state_dict()
    for key, value in state.items():
        if re.fullmatch(r"stylegan_decoder\.(style_conv1|style_convs\.\d+)\.weight", key):
            value.fill_(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"params_ema": state}, partial)
    partial.rename(path)


def test_face_restoration_with_the_hosts_spandrel(code_host, real_host, speech_clip):
    from sadtalker_core.media import video as video_io

    spandrel_version = real_host.python("import importlib.metadata as m; print(m.version('spandrel'))").strip()
    weights = real_host.data_dir / "models" / "SadTalker" / "GFPGANv1.4.pth"
    payload = {"image": data_url(PORTRAIT, "image/png"),
               "audio": base64.b64encode(speech_clip(0.12).read_bytes()).decode(),
               "face_detector": "dlib", "size": 256, "batch_size": 4, "seed": 5}
    status, plain = http(code_host, "POST", "/sadtalker/v1/generate", payload, timeout=900)
    assert status == 200, plain
    if not weights.exists():
        _synthetic_gfpgan(weights)
    t0 = time.monotonic()
    status, body = http(code_host, "POST", "/sadtalker/v1/generate", dict(payload, enhancer="gfpgan"), timeout=900)
    restore_s = time.monotonic() - t0
    assert status == 200, f"enhancer=gfpgan failed with the host's spandrel {spandrel_version}: {body}"
    frames = {}
    for name, result in (("plain", plain), ("gfpgan", body)):
        path = Path(result["path"])
        assert path.read_bytes() == base64.b64decode(result["video"])
        frames[name] = list(video_io.read_video_frames(path))
    assert len(frames["gfpgan"]) == len(frames["plain"]) == 3
    assert frames["gfpgan"][0].shape == frames["plain"][0].shape
    # same seed and input: only the restorer differs, and it changed the face
    import numpy as np

    difference = np.abs(frames["gfpgan"][0].astype(np.int16) - frames["plain"][0].astype(np.int16)).mean()
    assert difference > 1.0, difference
    sidecar = json.loads(Path(body["path"]).with_suffix(".json").read_text())
    assert sidecar["options"]["enhancer"] == "gfpgan", sidecar["options"]
    print(f"{real_host.info.name}: spandrel {spandrel_version}, gfpgan job {restore_s:.1f} s, "
          f"mean frame difference {difference:.1f}")
