"""The student in the web page against onnxruntime in Python, on this machine, side by side.

For each `distill --preset` student of the CycleGAN teacher (ngf 64), randomly initialised (speed does
not depend on the weights), this writes the page with `export_web`, serves it with `cgdistill serve`'s
server and opens it in headless Chromium with a fake camera (Selenium and Debian's chromedriver, as the
tests). At each size it measures:

- the page's camera loop end to end (grab the frame, convert, run, convert back, draw), in frames/s,
  counted between frame boundaries over at least ``--seconds`` and 8 frames, the median of ``--rounds``
  starts of the camera on one load of the page (each round's figure is kept in the JSON);
- the page's model time in that loop: the median of ``session.run`` over its last 30 frames, the median
  over the rounds (WebAssembly on the page's thread or in its worker as the page decides, at its own
  thread count, which the table names), while Chromium also captures and composites the camera;
- the page's model time alone: the camera stopped, ``session.run`` on one input of that size
  (``window.cgdistill.timeModel``), the median of ``--repeats`` runs after a warm-up run;
- onnxruntime in Python on the same .onnx file with the same thread count: the median of ``--repeats``
  runs after two warm-up runs.

Browser and Python run one after the other, never together. Other work on a shared machine slows both,
so each row records the load average before it and how many cores other processes kept busy during the
page's and Python's measurements (all busy CPU time less this process and its descendants').

Usage:
  .venv/bin/python benchmarks/browser.py [--sizes 320x240,256x256] [--seconds 10] [--rounds 3] [--runtime DIR] [--json FILE]
  .venv/bin/python benchmarks/browser.py --screenshot docs/images/web-page.png --model RUN|FILE --photo IMAGE

``--runtime`` defaults to the folder `make test` fills (.cache/onnxruntime-web/VERSION), else the
registry download into the home. ``--screenshot`` takes a picture of the page (a photo translated and
the fake camera running) instead of measuring.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cgdistill import paths
from cgdistill.device import cpu_name
from cgdistill.export import make_session
from cgdistill.nets import GeneratorConfig, ResnetGenerator, count_parameters
from cgdistill.onnxfile import INPUT_NAME, OUTPUT_NAME
from cgdistill.runs import resolve_generator
from cgdistill.threads import allowed_cpus, read_busy
from cgdistill.train.presets import PRESETS, preset_generator
from cgdistill.web.runtime import FILES, VERSION
from cgdistill.web.serve import open_server
from cgdistill.web.site import export_web
from cgdistill.weights import save_generator

TEACHER_NGF = 64
REPO = Path(__file__).resolve().parent.parent
CACHED_RUNTIME = REPO / ".cache" / "onnxruntime-web" / VERSION
CHROMEDRIVER = "/usr/bin/chromedriver"


def load() -> float:
    return os.getloadavg()[0]


def own_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its live descendants: chromedriver, Chromium and
    its helpers, whose threads run the page."""
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (name) "
        parents[int(entry)] = int(fields[1])
        seconds[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    mine, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        mine.add(pid)
        todo.extend(child for child, parent in parents.items() if parent == pid and child not in mine)
    return sum(seconds.get(pid, 0.0) for pid in mine)


class OthersLoad:
    """How many cores other processes kept busy while a measurement ran (all busy time less ours)."""

    def __enter__(self) -> OthersLoad:
        self.cpus = allowed_cpus()
        self.start = (read_busy(self.cpus) or 0.0, own_cpu_seconds(), time.monotonic())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, at = read_busy(self.cpus) or 0.0, own_cpu_seconds(), time.monotonic()
        self.cores = max(0.0, (busy - self.start[0]) - (own - self.start[1])) / (at - self.start[2])


def start_browser(*flags: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1400",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", *flags):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(900)  # timeModel runs the default student for half a minute
    return driver


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    server = open_server(folder, 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()


def js(driver, expression: str):
    return driver.execute_script(f"return {expression};")


def wait(driver, expression: str, timeout: float = 300.0, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = js(driver, expression)
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"the page never reached: {expression}")


def open_page(driver, url: str) -> str:
    driver.get(url)
    state = wait(driver, "document.body.dataset.state !== 'loading' && document.body.dataset.state")
    if state != "ready":
        error = js(driver, "document.getElementById('error').textContent")
        raise RuntimeError(f"the page did not start: {error}")
    return js(driver, "document.getElementById('backend').textContent")


STATS = "document.getElementById('camera-stats').dataset"  # the camera loop's figures, as the page keeps them
FRAMES = f"Number({STATS}.frames || 0)"
SHOWN = f"[Number({STATS}.frames), Number({STATS}.shownAt)]"  # how many frames, and when the last was shown


def camera_loop(driver, url: str, size: str, seconds: float, repeats: int, rounds: int = 3, query: str = "") -> dict:
    """The page's camera loop at ``size``: frames/s between frame boundaries and the page's model time, the
    median of ``rounds`` starts of the camera on one load of the page (this machine's speed drifts within
    minutes: one round alone can catch a slow one).

    Frames are counted and timed by the page itself (its frame count, and when it showed the last one), read
    at the start and at the end, so the driver's own round trips do not blur the frame boundaries."""
    from selenium.webdriver.support.ui import Select

    backend = open_page(driver, url + "?backend=wasm" + query)
    Select(driver.find_element("id", "camera-size")).select_by_value(size)
    fps, model_ms, frames = [], [], 0
    for _ in range(rounds):
        driver.find_element("id", "camera-start").click()
        wait(driver, f"{FRAMES} >= 3", poll=0.25)  # the first frames at a new shape set up memory: not counted
        start_frame, start_ms = js(driver, SHOWN)
        time.sleep(seconds)
        frame, now_ms = js(driver, SHOWN)
        while frame - start_frame < 8 and now_ms - start_ms < 120_000:
            time.sleep(1.0)
            frame, now_ms = js(driver, SHOWN)
        fps.append((frame - start_frame) * 1000.0 / (now_ms - start_ms))
        frames += frame - start_frame
        model_ms.append(float(js(driver, f"{STATS}.modelMs")))
        driver.find_element("id", "camera-stop").click()
        wait(driver, "document.getElementById('camera').dataset.state === 'off'")
    width, height = (int(n) for n in size.split("x"))
    alone = driver.execute_async_script(f"window.cgdistill.timeModel({width}, {height}, {repeats}).then(arguments[0]);")
    threads = re.search(r"(\d+) threads?", backend)
    return {
        "backend": backend,
        "threads": int(threads.group(1)) if threads else 1,
        "fps": statistics.median(fps),
        "fps_rounds": [round(value, 2) for value in fps],
        "frames": frames,
        "page_model_ms": statistics.median(model_ms),
        "page_alone_ms": float(alone),
    }


def python_ms(model: Path, shape: tuple[int, ...], threads: int, repeats: int) -> float:
    """onnxruntime in Python, CPU provider, ``threads`` intra-op threads: median ms of one run on an input of
    ``shape`` (a batch-1 image, or one layer's input: benchmarks/browser_layers.py)."""
    session = make_session(model.read_bytes(), threads)
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    for _ in range(2):
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def runtime_folder(given: str | None) -> Path | None:
    if given:
        return Path(given)
    if all((CACHED_RUNTIME / name).is_file() for name in FILES):
        return CACHED_RUNTIME
    return None  # export_web downloads it from the registry into the home


def build_sites(work: Path, runtime: Path | None, names: list[str]) -> dict[str, tuple[Path, GeneratorConfig]]:
    """One page per preset, each with a randomly initialised student of that preset's shape."""
    sites = {}
    with paths.using_home(work / "home"):
        for name in names:
            preset = PRESETS[name]
            config = preset_generator(preset, GeneratorConfig(ngf=TEACHER_NGF))
            run = paths.run_path(name)
            run.mkdir(parents=True)
            save_generator(ResnetGenerator(config), run / "G.safetensors", direction="B2A", teacher="teacher")
            export_web(resolve_generator(name, None, role="any"), work / name, runtime=runtime, progress=False)
            sites[name] = (work / name, config)
    return sites


def measure(args: argparse.Namespace) -> dict:
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="cgdistill-browser-") as scratch:
        sites = build_sites(Path(scratch), runtime_folder(args.runtime), args.presets.split(","))
        rows = []
        browser = "?"
        runs = [(name, size, "") for name in sites for size in sizes]
        if "fastest" in sites:
            runs.append(("fastest", sizes[0], "&threads=1"))  # a host without COOP/COEP: one thread
        for name, (width, height), query in runs:
            site, config = sites[name]
            with serving(site) as url:
                for attempt in range(args.retries + 1):
                    before = load()
                    # A fresh browser (and profile) for each try: on a profile's third load of the page,
                    # Chromium compiles the whole runtime again for its code cache, two cores busy for 25 s,
                    # unseen by OthersLoad (the browser is this process's child); such a row ran at half speed.
                    driver = start_browser()
                    try:
                        with OthersLoad() as page_others:
                            page = camera_loop(
                                driver, url, f"{width}x{height}", args.seconds, args.repeats, args.rounds, query
                            )
                        browser = driver.capabilities.get("browserVersion", "?")
                    finally:
                        driver.quit()
                    with OthersLoad() as python_others:
                        native = python_ms(site / "model.onnx", (1, 3, height, width), page["threads"], args.repeats)
                    busiest = max(page_others.cores, python_others.cores)
                    if busiest <= args.max_others or attempt == args.retries:
                        break
                    print(f"{name} {width}x{height}: others kept {busiest:.2f} cores busy; again in 30 s", flush=True)
                    time.sleep(30)
            row = {
                "preset": name,
                "shape": f"{config.blocks} {config.block}, ngf {config.ngf}"
                + ("" if config.ends == "full" else f", {config.ends}-resolution ends"),
                "parameters": count_parameters(ResnetGenerator(config)),
                "size": f"{width}x{height}",
                **page,
                "python_ms": native,
                "ratio": page["page_alone_ms"] / native,
                "load": round(before, 2),
                "others_cores": [round(page_others.cores, 2), round(python_others.cores, 2)],
            }
            rows.append(row)
            print(
                f"{name:8s} {width}x{height} {page['threads']} threads: page {row['fps']:.1f} frames/s, "
                f"model {row['page_model_ms']:.0f} ms in the loop, {row['page_alone_ms']:.0f} ms alone; "
                f"Python onnxruntime {native:.0f} ms "
                f"({row['ratio']:.2f}x); load {row['load']}, others {row['others_cores']} cores",
                flush=True,
            )
    import onnxruntime

    return {
        "cpu": f"{cpu_name()}, {os.cpu_count()} cores",
        "chromium": browser,
        "onnxruntime_web": VERSION,
        "onnxruntime": onnxruntime.__version__,
        "rows": rows,
    }


def table(result: dict) -> str:
    lines = [
        f"{result['cpu']}; Chromium {result['chromium']} (headless), onnxruntime-web {result['onnxruntime_web']}, "
        f"onnxruntime {result['onnxruntime']} (Python)",
        "",
        "| preset | student | size | threads | page: camera loop | page: model in the loop | page: model alone "
        "| Python onnxruntime | alone / Python | load avg | others' cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        rounds = r.get("fps_rounds", [])
        spread = f" ({min(rounds):.1f}-{max(rounds):.1f})" if len(rounds) > 1 else ""
        lines.append(
            f"| {r['preset']} | {r['shape']} | {r['size']} | {r['threads']} | {r['fps']:.1f} frames/s{spread} | {r['page_model_ms']:.0f} ms | "
            f"{r['page_alone_ms']:.0f} ms | "
            f"{r['python_ms']:.0f} ms | {r['ratio']:.2f}x | {r['load']:.2f} | {' / '.join(f'{v:.2f}' for v in r['others_cores'])} |"
        )
    lines.append("")
    lines.append("The camera loop: the median of its rounds (their range in brackets).")
    lines.append("Page and Python at the same thread count (the page's: the cores it sees, up to 8; 1 as on a host")
    lines.append("without COOP/COEP). Load average (1 min) before each row, our own earlier rows included; others'")
    lines.append("cores: how many cores other processes kept busy during the page's and Python's measurements.")
    return "\n".join(lines)


def screenshot(args: argparse.Namespace) -> None:
    """The page with a photo translated and the fake camera running, as a small PNG."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="cgdistill-shot-") as scratch:
        site = Path(scratch) / "site"
        export_web(resolve_generator(args.model, None, role="any"), site, runtime=runtime_folder(args.runtime),
                   progress=False)  # fmt: skip
        driver = start_browser()
        try:
            with serving(site) as url:
                open_page(driver, url)
                driver.find_element("id", "photo-input").send_keys(str(Path(args.photo).resolve()))
                wait(driver, "document.getElementById('photo').dataset.state === 'done'")
                driver.find_element("id", "camera-start").click()
                wait(driver, f"{FRAMES} >= 3")
                height = js(driver, "document.documentElement.scrollHeight")
                driver.set_window_size(1000, min(int(height) + 40, 2400))
                time.sleep(0.5)
                raw = Path(scratch) / "raw.png"
                driver.save_screenshot(str(raw))
        finally:
            driver.quit()
        image = Image.open(raw).convert("RGB")
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.screenshot, optimize=True)
    print(f"Wrote {args.screenshot} ({Path(args.screenshot).stat().st_size / 1e3:.0f} kB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="which presets' students, comma-separated")
    parser.add_argument("--sizes", default="320x240,256x256", help="camera sizes, WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="camera loop measured at least this long")
    parser.add_argument("--rounds", type=int, default=3, help="camera starts per row (the median is reported)")
    parser.add_argument("--repeats", type=int, default=15, help="Python onnxruntime runs (median)")
    parser.add_argument("--runtime", help="onnxruntime-web's files (default: .cache/onnxruntime-web/VERSION)")
    parser.add_argument("--max-others", type=float, default=0.25,
                        help="measure a row again when other processes kept more cores than this busy")  # fmt: skip
    parser.add_argument("--retries", type=int, default=4, help="how many times a disturbed row is measured again")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--screenshot", help="write a screenshot of the page here instead of measuring")
    parser.add_argument("--model", help="--screenshot: the model (RUN|FILE)")
    parser.add_argument("--photo", help="--screenshot: the photo to translate")
    args = parser.parse_args()
    if args.screenshot:
        if not (args.model and args.photo):
            parser.error("--screenshot needs --model and --photo")
        screenshot(args)
        return
    result = measure(args)
    print()
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
