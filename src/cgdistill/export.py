"""ONNX export of a generator: a deployment file that runs without PyTorch, checked against PyTorch.

The graph takes ``image`` (N x 3 x H x W, float32 RGB in [-1, 1]; N, H and W dynamic, H and W
multiples of 4) and returns ``translated`` of the same shape. The model's config, direction and
provenance travel in the ONNX ``metadata_props``. Before anything is written the exported graph runs
in onnxruntime on three input shapes (one non-square, one batch of two) and must match PyTorch to
``PARITY_TOLERANCE``; instance norm must come out as ONNX ``InstanceNormalization`` with PyTorch's
epsilon, which computes the same per-image statistics (a pitfall of exporters that fold it into a
batch norm with running statistics).
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cgdistill import __version__
from cgdistill.errors import CgdistillError, WorkFailed
from cgdistill.forward import DEFAULT_MULTIPLE, prepare_generator
from cgdistill.fsutil import atomic_write_bytes
from cgdistill.metadata import FORMAT_VERSION
from cgdistill.nets import ResnetGenerator
from cgdistill.onnxfile import INPUT_NAME, OUTPUT_NAME, require_onnx
from cgdistill.weights import FORMAT, ModelInfo

OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs difference on outputs in [-1, 1]: fp32 rounding is ~1e-6
PARITY_SHAPES = ((1, 64, 64), (2, 96, 160), (1, 256, 256))  # (batch, height, width)


def to_onnx_bytes(generator: ResnetGenerator) -> bytes:
    """The generator as an ONNX graph (fp32, opset 17) with dynamic batch, height and width."""
    require_onnx()
    model = prepare_generator(copy.deepcopy(generator).float(), torch.device("cpu"))
    dummy = torch.zeros(1, model.config.in_channels, 64, 64)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in torch 2.x but needs no extra packages and
        # exports these convs, pads and norms exactly (checked by parity_check on every export).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buffer,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()


def metadata_props(info: ModelInfo | None, config: dict, direction: str | None) -> dict[str, str]:
    """What a deployment needs to know about the model, as ONNX string metadata."""
    props = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "cgdistill_version": __version__,
        "kind": "generator",
        "arch": "resnet",
        "config": json.dumps(config, sort_keys=True),
        "input": f"{INPUT_NAME}: N x 3 x H x W float32 RGB in [-1, 1], H and W multiples of 4",
        "output": f"{OUTPUT_NAME}: N x 3 x H x W float32 RGB in [-1, 1]",
        "multiple": str(DEFAULT_MULTIPLE),
    }
    props.update({key: str(value) for key, value in config.items()})
    if direction:
        props["direction"] = direction
    if info is not None:
        for key in ("dataset", "teacher", "image_size"):
            value = getattr(info, key)
            if value is not None:
                props[key] = str(value)
        props["step"] = str(info.step)
    return props


def attach_metadata(model_bytes: bytes, props: dict[str, str]) -> bytes:
    onnx, _ = require_onnx()
    model = onnx.load_from_string(model_bytes)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = "CycleGAN ResNet generator exported by cgdistill"
    return model.SerializeToString()


def count_instance_norms(generator: nn.Module) -> int:
    return sum(isinstance(m, nn.InstanceNorm2d) for m in generator.modules())


def check_instance_norm(model_bytes: bytes, generator: nn.Module) -> None:
    """Every instance norm must be an ONNX InstanceNormalization with PyTorch's epsilon."""
    onnx, _ = require_onnx()
    graph = onnx.load_from_string(model_bytes).graph
    nodes = [n for n in graph.node if n.op_type == "InstanceNormalization"]
    expected = count_instance_norms(generator)
    if len(nodes) != expected:
        raise WorkFailed(f"The ONNX graph has {len(nodes)} InstanceNormalization nodes for {expected} instance norms.")
    epsilons = {next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5) for n in nodes}
    wanted = {m.eps for m in generator.modules() if isinstance(m, nn.InstanceNorm2d)}
    if any(min(abs(e - w) for w in wanted) > 1e-9 for e in epsilons):
        raise WorkFailed(f"The ONNX graph's instance norms use epsilon {sorted(epsilons)}, PyTorch {sorted(wanted)}.")


def make_session(model_bytes: bytes, threads: int | None = None):
    """An onnxruntime CPU session; ``threads`` intra-op threads (default: torch's, for like-for-like timing)."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    # Its worker threads spin between the operators of a run (fast) but, unless told, also for a while
    # after the run returns, taking the cores from whatever runs next: the video pipeline's decoder and
    # encoder, or the other engine being timed (docs/benchmarks.md, "The timing loop").
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


@dataclass
class ParityResult:
    shape: tuple[int, int, int, int]
    max_abs: float


def parity_check(generator: ResnetGenerator, model_bytes: bytes, seed: int = 0) -> list[ParityResult]:
    """Max abs difference between PyTorch (fp32, CPU) and onnxruntime on ``PARITY_SHAPES``."""
    session = make_session(model_bytes)
    gen = torch.Generator().manual_seed(seed)
    model = prepare_generator(copy.deepcopy(generator).float(), torch.device("cpu"))
    results = []
    for batch, height, width in PARITY_SHAPES:
        x = torch.rand(batch, model.config.in_channels, height, width, generator=gen) * 2 - 1
        with torch.inference_mode():
            expected = model(x)
        got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
        if got.shape != expected.shape:
            raise WorkFailed(f"The ONNX graph returned shape {tuple(got.shape)} for input {tuple(x.shape)}.")
        results.append(ParityResult(tuple(x.shape), float((got - expected).abs().max())))
    return results


@dataclass
class ExportResult:
    path: Path
    size_bytes: int
    parity: list[ParityResult] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def export_onnx(
    generator: ResnetGenerator, output: Path | str, *, info: ModelInfo | None = None, direction: str | None = None
) -> ExportResult:
    """Export, check instance norm and parity, then write ``output`` atomically (nothing written on failure)."""
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise CgdistillError(f"Output {output} should end in .onnx; pass -o NAME.onnx.")
    if output.is_dir():
        raise CgdistillError(f"Output {output} is a folder; pass -o FOLDER/NAME.onnx.")
    direction = direction or (info.direction if info is not None else None)
    model_bytes = to_onnx_bytes(generator)
    check_instance_norm(model_bytes, generator)
    parity = parity_check(generator, model_bytes)
    worst = max(parity, key=lambda r: r.max_abs)
    if not worst.max_abs <= PARITY_TOLERANCE:
        raise WorkFailed(
            f"The ONNX graph differs from PyTorch by {worst.max_abs:.2e} (over {PARITY_TOLERANCE:.0e}) on input "
            f"{worst.shape}; nothing was written."
        )
    props = metadata_props(info, generator.config.to_dict(), direction)
    model_bytes = attach_metadata(model_bytes, props)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, model_bytes)
    return ExportResult(output, len(model_bytes), parity, props)
