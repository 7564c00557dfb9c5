"""Where the page's model time goes: each layer of a student alone, in headless Chromium and in Python.

`benchmarks/browser.py` finds the page's model 3-6x slower than onnxruntime in Python on the same CPU.
This script asks which layers make that gap. It cuts one `distill --preset` student of the CycleGAN
teacher (ngf 64, random weights: speed does not depend on them) into its layers: every layer of the
stem, the downsampling, the first residual block (the others are the same), the upsampling and the
head. It exports each layer alone to ONNX with the input it sees at that size. Then each layer is
timed in two places:
- in the page's runtime (onnxruntime-web's WebAssembly backend, in a worker, at the page's thread
  count, cross-origin isolated as `cgdistill serve` serves it), on a small timing page this script
  writes beside the runtime's files;
- by onnxruntime in Python at the same thread count.
Each figure is the median of ``--repeats`` runs after a warm-up run (two in Python, where `browser.py`'s
timing serves both scripts), and the rounds alternate between the two places.

Usage:
  .venv/bin/python benchmarks/browser_layers.py [--preset fastest] [--size 320x240] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from browser import CACHED_RUNTIME, python_ms, serving, start_browser
from cgdistill.device import cpu_name
from cgdistill.export import OPSET
from cgdistill.forward import prepare_generator
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.onnxfile import INPUT_NAME, OUTPUT_NAME
from cgdistill.train.presets import PRESETS, preset_generator
from cgdistill.web.runtime import ENTRY, FILES, get_runtime

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>layer timing</title>
<body data-state="loading">
<script type="module">
import * as ort from "./ort/ENTRY";
ort.env.wasm.numThreads = THREADS;
ort.env.wasm.proxy = true; // as the page runs its model: in a worker
ort.env.logLevel = "error";
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
window.timeLayer = async (file, dims, runs) => {
  const bytes = new Uint8Array(await (await fetch(file)).arrayBuffer());
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const input = () => new ort.Tensor("float32", new Float32Array(dims.reduce((a, b) => a * b)), dims);
  await session.run({ [session.inputNames[0]]: input() });
  const times = [];
  for (let i = 0; i < runs; i++) {
    const feed = { [session.inputNames[0]]: input() }; // the worker takes each input's buffer
    const start = performance.now();
    await session.run(feed);
    times.push(performance.now() - start);
  }
  await session.release();
  return median(times);
};
document.body.dataset.state = self.crossOriginIsolated ? "ready" : "not isolated";
</script>
"""


def layers(generator: ResnetGenerator, height: int, width: int) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, layer, the input shape it sees) for each layer of the stem, downsampling, first block, upsampling
    and head, in the order a pass runs them."""
    parts = {"stem": generator.stem, "down": generator.down, "block": generator.blocks[0].conv}
    for i, stage in enumerate(generator.up):
        parts[f"up.{i}"] = stage
    parts["head"] = generator.head
    found: list[tuple[str, nn.Module]] = [
        (f"{part}.{i} {type(layer).__name__}", layer)
        for part, sequence in parts.items()
        for i, layer in enumerate(sequence)
    ]
    shapes: dict[int, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple) -> None:  # returns None: the layer's input is left as it is
        shapes.setdefault(id(module), tuple(args[0].shape))

    hooks = [layer.register_forward_pre_hook(record) for _, layer in found]
    with torch.inference_mode():
        generator(torch.zeros(1, 3, height, width))
    for hook in hooks:
        hook.remove()
    return [(name, layer, shapes[id(layer)]) for name, layer in found]


def layer_onnx(layer: nn.Module, shape: tuple[int, ...]) -> bytes:
    """One layer as an ONNX graph (the exporter `cgdistill export` uses, at its opset), for inputs of ``shape``."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            layer,
            (torch.zeros(shape),),
            buffer,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=False,
        )
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="fastest", choices=sorted(PRESETS))
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the frame")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    torch.manual_seed(0)
    config = preset_generator(PRESETS[args.preset], GeneratorConfig(ngf=64))
    generator = prepare_generator(ResnetGenerator(config).eval(), torch.device("cpu"))
    found = layers(generator, height, width)
    page: dict[str, list[float]] = {name: [] for name, _, _ in found}
    native: dict[str, list[float]] = {name: [] for name, _, _ in found}
    with tempfile.TemporaryDirectory(prefix="cgdistill-layers-") as scratch:
        site = Path(scratch)
        runtime = CACHED_RUNTIME if all((CACHED_RUNTIME / n).is_file() for n in FILES) else None
        (site / "ort").mkdir()
        for name in FILES:
            shutil.copyfile(get_runtime(runtime, progress=False).folder / name, site / "ort" / name)
        (site / "index.html").write_text(PAGE.replace("ENTRY", ENTRY).replace("THREADS", str(args.threads)))
        files = {}
        for number, (name, layer, shape) in enumerate(found):
            files[name] = site / f"layer{number}.onnx"
            files[name].write_bytes(layer_onnx(layer, shape))
        driver = start_browser()
        try:
            with serving(site) as url:
                driver.get(url)
                state = driver.execute_script("return document.body.dataset.state;")
                if state != "ready":
                    raise SystemExit(f"the timing page is {state}: threads need cross-origin isolation")
                for turn in range(args.rounds):
                    for name, _, shape in found:
                        page[name].append(
                            driver.execute_async_script(
                                f"window.timeLayer('{files[name].name}', {list(shape)}, {args.repeats}).then(arguments[0]);"
                            )
                        )
                        native[name].append(python_ms(files[name], shape, args.threads, args.repeats))
                    print(f"round {turn + 1} of {args.rounds} done", flush=True)
            browser = driver.capabilities.get("browserVersion", "?")
        finally:
            driver.quit()
    print()
    print(f"`{args.preset}` at {width}x{height}, {args.threads} threads; {cpu_name()}; Chromium {browser} (headless)")
    print()
    print("| layer | input | page ms | Python ms | page / Python |")
    print("|---|---|---:|---:|---:|")
    total_page = total_native = 0.0
    for name, _, shape in found:
        p, n = statistics.median(page[name]), statistics.median(native[name])
        total_page, total_native = total_page + p, total_native + n
        print(f"| {name} | {'x'.join(map(str, shape[1:]))} | {p:.2f} | {n:.2f} | {p / n:.1f}x |")
    print(f"| all layers above | | {total_page:.1f} | {total_native:.1f} | {total_page / total_native:.1f}x |")


if __name__ == "__main__":
    main()
