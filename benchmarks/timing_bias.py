"""Why compare, `translate --engine auto` and the latency benchmark disagreed: one model timed alone
against the same model timed right after another engine's turn, and the two timing loops side by side.

Usage: .venv/bin/python benchmarks/timing_bias.py [--model fastest|fast|default|teacher] [--size 256] [--repeats 15]

Every row times one call of ``model(x)`` at ``--size`` square, batch 1, median of ``--repeats``:
"alone" is a block of calls after three untimed ones; "after X" calls X (untimed) before each timed
call, as the alternating turns of the old ``cost.interleaved_median_ms`` did. onnxruntime runs twice:
with its default session options (worker threads keep spinning after a run returns) and as
``export.make_session`` makes it now (``session.force_spinning_stop``). Then the old loop (one call
per model per turn) and ``cost.median_ms`` (blocks with their own warm-up, order reversed each round)
time torch bf16 and onnxruntime together. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

from cgdistill.cost import median_ms
from cgdistill.engines import CpuBf16, torch_model
from cgdistill.export import make_session, to_onnx_bytes
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.onnxfile import INPUT_NAME, OUTPUT_NAME, require_onnx
from cgdistill.train.presets import PRESETS, preset_generator

CPU = torch.device("cpu")
TEACHER = GeneratorConfig(blocks=9, ngf=64)
SHAPES = {"teacher": TEACHER} | {name: preset_generator(p, TEACHER) for name, p in PRESETS.items()}
Model = Callable[[torch.Tensor], object]


def spinning_session(model_bytes: bytes) -> Model:
    """onnxruntime with its default options (as before ``session.force_spinning_stop``), torch's thread count."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})


def stopping_session(model_bytes: bytes) -> Model:
    session = make_session(model_bytes)
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})


def alone(model: Model, x: torch.Tensor, repeats: int) -> float:
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def after(model: Model, other: Model, x: torch.Tensor, repeats: int) -> float:
    model(x)
    times = []
    for _ in range(repeats):
        other(x)
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def cpu_after(model: Model, x: torch.Tensor, seconds: float = 1.0) -> float:
    """CPU time (ms, every thread of this process) burnt in the ``seconds`` after one call returns, asleep:
    what its idle worker threads spin away, taking cores from whatever runs next."""
    model(x)
    start = time.process_time()
    time.sleep(seconds)
    return (time.process_time() - start) * 1000


def old_loop(models: dict[str, Model], x: torch.Tensor, repeats: int, warmup: int = 1) -> dict[str, float]:
    """The timing loop before: one call of each model per turn (``cost.interleaved_median_ms``)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for turn in range(warmup + repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(x)
            if turn >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fastest", choices=list(SHAPES))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = ResnetGenerator(SHAPES[args.model]).eval().requires_grad_(False)
    bf16 = CpuBf16(torch_model(generator, CPU))
    model_bytes = to_onnx_bytes(generator)
    spinning, stopping = spinning_session(model_bytes), stopping_session(model_bytes)
    x = torch.rand(1, 3, args.size, args.size) * 2 - 1
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{args.model} {SHAPES[args.model]}, {args.size}x{args.size}, batch 1, {args.threads} threads; {load}")
    n = args.repeats
    with torch.inference_mode():
        rows = [
            ("torch bf16 alone", alone(bf16, x, n)),
            ("torch bf16 after onnxruntime (default options)", after(bf16, spinning, x, n)),
            ("torch bf16 after onnxruntime (force_spinning_stop)", after(bf16, stopping, x, n)),
            ("onnxruntime (default options) alone", alone(spinning, x, n)),
            ("onnxruntime (force_spinning_stop) alone", alone(stopping, x, n)),
            ("onnxruntime (default options) after torch bf16", after(spinning, bf16, x, n)),
            ("onnxruntime (force_spinning_stop) after torch bf16", after(stopping, bf16, x, n)),
        ]
        for label, ms in rows:
            print(f"  {label:52s} {ms:8.1f} ms")
        for label, model in (("torch bf16", bf16), ("onnxruntime (default options)", spinning)):
            print(f"  CPU burnt in the second after a {label} call returns: {cpu_after(model, x):.0f} ms")
        print(f"  ... after an onnxruntime (force_spinning_stop) call: {cpu_after(stopping, x):.0f} ms")
        both = median_ms({"default": spinning, "stop": stopping}, x, repeats=n, rounds=3)
        print(
            f"  onnxruntime alone, cost.median_ms: default options {both['default']:.1f} ms, "
            f"force_spinning_stop {both['stop']:.1f} ms"
        )
        for label, ort in (("default options", spinning), ("force_spinning_stop", stopping)):
            pair = {"torch bf16": bf16, "onnxruntime": ort}
            before = old_loop(pair, x, n)
            now = median_ms(pair, x, repeats=n)
            print(
                f"  onnxruntime with {label}: old loop torch bf16 {before['torch bf16']:.1f} / onnxruntime "
                f"{before['onnxruntime']:.1f} ms; cost.median_ms {now['torch bf16']:.1f} / {now['onnxruntime']:.1f} ms"
            )
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
