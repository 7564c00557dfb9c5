"""The web page in a real browser: headless Chromium driven by Selenium through Debian's chromedriver, the
page served by `cgdistill serve`'s server, the runtime being onnxruntime-web's real files (`npm pack`,
once per machine: tests/webparts.py) and the model a tiny student.

Without Chromium, chromedriver, selenium or npm these tests skip and say which is missing; CI sets
CGDISTILL_REQUIRE_BROWSER=1 (.ci/run), which turns that skip into a failure.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cgdistill import paths
from cgdistill.runs import resolve_generator
from cgdistill.web.serve import open_server
from cgdistill.web.site import export_web
from webparts import real_runtime, student_run

CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_ENV = "CGDISTILL_REQUIRE_BROWSER"
FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
# WebGPU on SwiftShader, Chromium's software renderer: the WebGPU path without a GPU (slow, but the same code).
SOFTWARE_WEBGPU = (
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-angle=swiftshader",
    "--use-webgpu-adapter=swiftshader",
)
# An adapter whose device cannot be had, in place of the browser's: WebGPU is there but cannot run the model.
BROKEN_WEBGPU = """
Object.defineProperty(navigator, "gpu", {configurable: true, value: {
  getPreferredCanvasFormat: () => "rgba8unorm",
  requestAdapter: async () => ({features: new Set(), limits: {}, info: {}, isFallbackAdapter: false,
    requestDevice: async () => { throw new Error("this test adapter has no device"); }}),
}});
"""
LOAD_S = 120  # a 2-core machine shared with other work compiles the 29 MB runtime in seconds, rarely more


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_part() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if chromium() is None:
        return "Chromium is not installed (Debian: apt-get install chromium chromium-driver)"
    if not os.access(CHROMEDRIVER, os.X_OK):
        return f"{CHROMEDRIVER} is missing (Debian: apt-get install chromium-driver)"
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason}, and {REQUIRE_ENV} is set")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def ort_files() -> Path:
    reason = missing_part()
    if reason:
        skip_or_fail(reason)
    found = real_runtime()
    if not isinstance(found, Path):
        skip_or_fail(found)
    return found


def start_browser(*flags: str):
    """Headless Chromium through Debian's chromedriver; Selenium is given both paths, so it never tries to
    download a driver or a browser."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1400", *flags):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser(ort_files):
    driver = start_browser(*FAKE_CAMERA)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(ort_files, tmp_path_factory) -> Path:
    """A web export of a tiny student (ngf 8, 2 blocks) with the real runtime."""
    root = tmp_path_factory.mktemp("web")
    with paths.using_home(root / "home"):
        student_run(blocks=2, ngf=8)
        export_web(resolve_generator("stud", None, role="any"), root / "site", runtime=ort_files, progress=False)
    return root / "site"


@contextlib.contextmanager
def serving(folder: Path, isolated: bool = True) -> Iterator[str]:
    """``folder`` on 127.0.0.1: by `cgdistill serve`'s server, or (``isolated=False``) by a plain static
    server without the cross-origin isolation headers, as many static hosts are."""
    if isolated:
        server = open_server(folder, 0)
        url = server.url
    else:

        class Plain(http.server.SimpleHTTPRequestHandler):
            extensions_map = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Plain, directory=str(folder)))
        url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def url(site) -> Iterator[str]:
    with serving(site) as address:
        yield address


def wait_for(driver, script: str, timeout: float = LOAD_S):
    """Until ``script`` (a JavaScript expression) is truthy; its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(f"return {script};"))


def open_page(driver, address: str) -> str:
    """Load the page and wait until it has left "loading"; its state."""
    driver.get(address)
    return wait_for(driver, "document.body.dataset.state !== 'loading' && document.body.dataset.state")


def text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent;")


def canvas_pixels(driver, element_id: str) -> np.ndarray:
    """A canvas's RGBA pixels, read back losslessly (PNG)."""
    data_url = driver.execute_script(f"return document.getElementById('{element_id}').toDataURL('image/png');")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGBA"))


def give_photo(driver, path: Path) -> str:
    """Pick ``path`` in the page's file input; the photo section's final state."""
    driver.execute_script("document.getElementById('photo').dataset.state = 'idle';")
    driver.find_element("id", "photo-input").send_keys(str(path))
    return wait_for(driver, "['done', 'error'].includes(document.getElementById('photo').dataset.state) && "
                    "document.getElementById('photo').dataset.state")  # fmt: skip


def photo(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A photo-like test image: smooth colour fields plus grain, so that every pixel's value matters."""
    rng = np.random.default_rng(seed)
    fields = Image.fromarray((rng.random((3, 4, 3)) * 255).astype(np.uint8), "RGB").resize((width, height))
    pixels = np.asarray(fields, dtype=float) * 0.8 + rng.normal(0, 12, (height, width, 3)) + 25
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(path)
    return path


def test_the_page_loads_and_runs_on_webassembly_threads(browser, url):
    assert open_page(browser, url) == "ready", text(browser, "error")
    backend = text(browser, "backend")
    assert backend.startswith("WebAssembly (SIMD, ") and "thread" in backend
    assert backend.endswith(", on the page's thread)")  # a model this cheap skips the worker's hop
    assert browser.execute_script("return self.crossOriginIsolated;") is True
    assert "Teacher" in text(browser, "model") and "27.50 dB PSNR" in text(browser, "model")


def test_scripts_can_time_the_model_alone(browser, url):
    assert open_page(browser, url) == "ready"
    ms = browser.execute_async_script("window.cgdistill.timeModel(32, 24, 3).then(arguments[0]);")
    assert isinstance(ms, int | float) and ms > 0


@pytest.mark.parametrize("height, width", [(45, 61), (6, 5)], ids=["reflect-padded", "replicate-padded"])
def test_a_photo_in_the_page_matches_translate_with_the_onnx_file(browser, url, site, cli, tmp_path, height, width):
    """The page's pixels against `cgdistill translate --model model.onnx` (onnxruntime, native float32) on the
    same photo: every pixel within 1 grey level.

    Why 1: both sides run the same float32 graph on the same float32 input (the page converts uint8 to
    [-1, 1] with translate's float32 operations, pads the same way, and converts back with translate's
    float32 multiply and round-half-to-even). They differ only in summation order and fused operations
    (WebAssembly SIMD128 kernels against AVX-512 ones), which moves an output in [-1, 1] by about 1e-6
    (float32 rounding over a few hundred accumulations a pixel; export's parity check measures ~1e-5
    against PyTorch). Times 127.5 that is under 1e-3 of a grey level, so rounding to uint8 can differ only
    where a value lies within that distance of a half: by exactly 1, and at few pixels.
    """
    image = photo(tmp_path / "photo.png", height, width)
    assert open_page(browser, url) == "ready"
    assert give_photo(browser, image) == "done", text(browser, "photo-message")
    page = canvas_pixels(browser, "photo-after")
    assert cli("translate", image, "--model", site / "model.onnx", "--engine", "onnxruntime", "--output",
               tmp_path / "out").code == 0  # fmt: skip
    native = np.asarray(Image.open(tmp_path / "out" / "photo_A2B.png").convert("RGB"))
    assert page.shape == (height, width, 4) and (page[..., 3] == 255).all()
    difference = np.abs(page[..., :3].astype(int) - native.astype(int))
    assert difference.max() <= 1, f"{(difference > 1).sum()} values differ by more than 1 grey level"
    assert (difference == 0).mean() > 0.99
    assert native.std() > 10, "the tiny student must shape its output, or equal pixels prove nothing"
    assert text(browser, "photo-caption").startswith(f"{width} × {height} pixels, translated in")
    link = browser.find_element("id", "photo-download")
    assert link.is_displayed() and link.get_attribute("download") == "photo-A2B.png"
    assert link.get_attribute("href").startswith("blob:")


def test_the_pages_pixel_store_rounds_halves_to_even_and_clamps_as_translate_does(browser, url):
    """The page stores (y + 1) * 127.5 into ImageData's Uint8ClampedArray and leaves the rounding to its
    conversion (ECMAScript's ToUint8Clamp), which must be translate's: halves to even (numpy's rint), then
    clamped to 0..255. The photo test allows 1 grey level, so it would not see halves rounded up."""
    assert open_page(browser, url) == "ready"
    values = [0.5, 1.5, 2.5, 3.49, 127.5, 128.5, 254.5, 254.51, -0.5, -3.0, 255.5, 300.0]
    stored = browser.execute_script(
        "const image = new ImageData(arguments[0].length, 1);"
        "arguments[0].forEach((v, i) => { image.data[4 * i] = Math.fround(v); });"
        "return Array.from(image.data.filter((_, i) => i % 4 === 0));",
        values,
    )
    assert stored == np.clip(np.rint(np.float32(values)), 0, 255).astype(int).tolist()


def test_in_a_worker_the_page_gives_the_same_pixels(browser, url, tmp_path):
    """``?proxy=1``: the model in onnxruntime-web's worker, as a dear model runs; the same kernels, so the same pixels."""
    image = photo(tmp_path / "photo.png", 24, 32)
    pixels = {}
    for query, where in (("", "on the page's thread"), ("?proxy=1", "in a worker")):
        assert open_page(browser, url + query) == "ready"
        assert text(browser, "backend").endswith(f", {where})")
        assert give_photo(browser, image) == "done", text(browser, "photo-message")
        pixels[where] = canvas_pixels(browser, "photo-after")
    assert np.array_equal(pixels["on the page's thread"], pixels["in a worker"])


def test_a_photo_over_the_limit_is_scaled_and_the_page_says_so(browser, tmp_path, ort_files):
    with paths.using_home(tmp_path / "home"):
        student_run()
        export_web(resolve_generator("stud", None, role="any"), tmp_path / "site", runtime=ort_files, max_side=32)
    with serving(tmp_path / "site") as address:
        assert open_page(browser, address) == "ready"
        assert "Photos up to 32 pixels" in text(browser, "photo")
        assert give_photo(browser, photo(tmp_path / "big.png", 48, 64)) == "done"
        assert canvas_pixels(browser, "photo-after").shape[:2] == (24, 32)
        assert "Scaled from 64 × 48 to 32 × 24 pixels to fit the page's limit of 32 pixels" in text(
            browser, "photo-caption"
        )


def test_a_file_that_is_not_an_image_gets_a_sentence_and_the_page_stays_ready(browser, url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    assert open_page(browser, url) == "ready"
    assert give_photo(browser, notes) == "error"
    assert text(browser, "photo-message") == (
        "notes.txt is not an image this browser can read: pick a photo (JPEG, PNG, WebP, GIF, AVIF or BMP)."
    )
    assert browser.execute_script("return document.body.dataset.state;") == "ready"


def test_the_fake_camera_is_translated_live_with_frames_per_second_shown(browser, url):
    assert open_page(browser, url) == "ready"
    browser.find_element("id", "camera-start").click()
    frames = wait_for(browser, "Number(document.getElementById('camera-stats').dataset.frames || 0) >= 3 && "
                      "Number(document.getElementById('camera-stats').dataset.frames)")  # fmt: skip
    assert frames >= 3 and text(browser, "camera-message") == ""
    fps = float(text(browser, "camera-fps"))
    assert fps > 0 and float(text(browser, "camera-model-ms")) > 0
    # When the page showed its latest frame (benchmarks/browser.py times frames by it): later frames, later times.
    shown = "[Number(document.getElementById('camera-stats').dataset.frames), " \
            "Number(document.getElementById('camera-stats').dataset.shownAt)]"  # fmt: skip
    first_frame, first_at = browser.execute_script(f"return {shown};")
    assert wait_for(browser, f"Number(document.getElementById('camera-stats').dataset.frames) > {first_frame}")
    later_frame, later_at = browser.execute_script(f"return {shown};")
    assert later_frame > first_frame and later_at > first_at > 0
    output = canvas_pixels(browser, "camera-output")
    assert output.shape == (240, 320, 4) and output[..., :3].std() > 5, "frames are drawn, not left blank"
    browser.find_element("id", "camera-stop").click()
    assert wait_for(browser, "document.getElementById('camera').dataset.state === 'off'")
    # Started again, the camera shows its own figures from the moment Start is pressed, not the last run's.
    cleared = browser.execute_script(
        "document.getElementById('camera-start').click();"
        "const stats = document.getElementById('camera-stats');"
        "return [stats.dataset.frames === undefined, stats.dataset.shownAt === undefined,"
        " document.getElementById('camera-fps').textContent];"
    )
    assert cleared == [True, True, "\u2013"]
    assert wait_for(browser, "Number(document.getElementById('camera-stats').dataset.frames || 0) >= 3")
    browser.find_element("id", "camera-stop").click()
    assert wait_for(browser, "document.getElementById('camera').dataset.state === 'off'")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # A camera, and the permission refused.
        (("--use-fake-device-for-media-stream", "--deny-permission-prompts"),
         "The camera is blocked for this page: allow it in the browser"),
        # The permission granted, but there is no device.
        (("--use-fake-ui-for-media-stream",), "No camera was found"),
    ],
    ids=["blocked", "no camera"],
)  # fmt: skip
def test_a_camera_that_cannot_start_says_why(ort_files, url, flags, message):
    driver = start_browser(*flags)
    try:
        assert open_page(driver, url) == "ready"
        driver.find_element("id", "camera-start").click()
        wait_for(driver, "document.getElementById('camera').dataset.state === 'error'")
        assert text(driver, "camera-message").startswith(message)
    finally:
        driver.quit()


def broken_copy(site: Path, target: Path, damage) -> Path:
    shutil.copytree(site, target)
    damage(target)
    return target


@pytest.mark.parametrize(
    "damage, sentence",
    [
        (lambda s: (s / "model.onnx").unlink(), "The model model.onnx is missing from this site (HTTP 404)"),
        (
            lambda s: (s / "model.onnx").write_bytes((s / "model.onnx").read_bytes()[:5000]),
            "The model model.onnx is damaged (5,000 bytes that are not the file this page was exported with)",
        ),
        (
            lambda s: (s / "ort" / "ort.webgpu.min.mjs").unlink(),
            "The runtime ort/ort.webgpu.min.mjs did not load",
        ),
    ],
    ids=["missing-model", "damaged-model", "missing-runtime"],
)
def test_a_broken_site_puts_the_page_in_error_with_a_sentence(browser, site, tmp_path, damage, sentence):
    with serving(broken_copy(site, tmp_path / "broken", damage)) as address:
        assert open_page(browser, address) == "error"
        assert text(browser, "error").startswith(sentence)
        assert browser.execute_script("return document.getElementById('photo-input').disabled;") is True


def test_a_model_onnxruntime_cannot_read_is_an_error_sentence(browser, site, tmp_path):
    """A file with the right digest that is no ONNX graph: onnxruntime-web itself refuses it."""
    import hashlib
    import json
    import re

    def swap(folder: Path) -> None:
        junk = b"\x00not an onnx graph" * 100
        (folder / "model.onnx").write_bytes(junk)
        page = (folder / "index.html").read_text()
        digest = hashlib.sha256(junk).hexdigest()
        (folder / "index.html").write_text(re.sub(r'"sha256": "[0-9a-f]+"', json.dumps({"sha256": digest})[1:-1], page))

    with serving(broken_copy(site, tmp_path / "junk", swap)) as address:
        assert open_page(browser, address) == "error"
        assert text(browser, "error").startswith("onnxruntime-web could not load the model model.onnx (")


def test_without_isolation_headers_the_page_runs_on_one_thread_and_says_why(browser, site):
    with serving(site, isolated=False) as address:
        assert open_page(browser, address) == "ready"
        assert browser.execute_script("return self.crossOriginIsolated;") is False
        assert text(browser, "backend").startswith(
            "WebAssembly (SIMD, 1 thread: this site does not send the cross-origin isolation headers"
        )


def test_with_a_webgpu_adapter_the_page_runs_on_webgpu_and_matches_translate(ort_files, url, site, cli, tmp_path):
    """The WebGPU path, on SwiftShader's software adapter (headless Chromium has no GPU here): the same
    float32 graph on another backend, held to the tolerance argued for WebAssembly above."""
    driver = start_browser(*SOFTWARE_WEBGPU)
    try:
        assert open_page(driver, url) == "ready", text(driver, "error")
        if text(driver, "backend") != "WebGPU":
            has_adapter = driver.execute_async_script(
                "const done = arguments[0]; navigator.gpu ? navigator.gpu.requestAdapter().then(a => done(!!a)) : done(false);"
            )
            assert not has_adapter, f"an adapter was there, yet the page runs on {text(driver, 'backend')}"
            skip_or_fail("this Chromium offers no software WebGPU adapter (SwiftShader)")
        image = photo(tmp_path / "photo.png", 20, 28)
        assert give_photo(driver, image) == "done", text(driver, "photo-message")
        page = canvas_pixels(driver, "photo-after")
    finally:
        driver.quit()
    assert cli("translate", image, "--model", site / "model.onnx", "--output", tmp_path / "out").code == 0
    native = np.asarray(Image.open(tmp_path / "out" / "photo_A2B.png").convert("RGB"))
    assert np.abs(page[..., :3].astype(int) - native.astype(int)).max() <= 1


def test_when_webgpu_cannot_run_the_model_the_page_falls_back_to_webassembly(ort_files, url):
    driver = start_browser()
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": BROKEN_WEBGPU})
        assert open_page(driver, url) == "ready", text(driver, "error")
        backend = text(driver, "backend")
        assert backend.startswith("WebAssembly (SIMD, ") and "(WebGPU could not run the model: " in backend
    finally:
        driver.quit()
