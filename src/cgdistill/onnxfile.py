"""ONNX model files as ``cgdistill export`` writes them: input and output names, the metadata, reading one.

Below export.py (which builds and checks the graph) so that model resolution (runs.py) and the
engines can read an ``.onnx`` file without importing the exporter; ``onnx`` and ``onnxruntime``
(the ``onnx`` extra) are imported only when a file is read.
"""

from __future__ import annotations

import os
from pathlib import Path

from cgdistill.errors import CgdistillError
from cgdistill.fsutil import not_a_file_reason
from cgdistill.weights import FORMAT, ModelInfo, info_from_metadata

INPUT_NAME = "image"
OUTPUT_NAME = "translated"
ONNX_SUFFIX = ".onnx"
MISSING_EXTRA = "ONNX export and the onnxruntime engine need the onnx extra: pip install 'cgdistill[onnx]'."


def require_onnx():
    """The ``onnx`` and ``onnxruntime`` modules, or one sentence saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise CgdistillError(MISSING_EXTRA) from None
    return onnx, onnxruntime


def onnx_available() -> bool:
    try:
        require_onnx()
    except CgdistillError:
        return False
    return True


def is_onnx_file(path: Path | str) -> bool:
    """Whether ``path`` names an ONNX model, by its suffix (``cgdistill export`` writes only ``.onnx``)."""
    return Path(path).suffix.lower() == ONNX_SUFFIX


def load_onnx(path: Path | str) -> tuple[bytes, ModelInfo]:
    """The bytes and typed metadata of an ONNX file that ``cgdistill export`` wrote.

    The metadata goes through the same schema as a ``.safetensors`` file's (a stranger's file is
    input to check); any other ONNX file, or a damaged one, is refused in one sentence naming it.
    """
    path = Path(path)
    if not os.path.isfile(path):
        raise CgdistillError(f"Model file {path} {not_a_file_reason(path)}.")
    onnx, _ = require_onnx()
    from google.protobuf.message import DecodeError  # protobuf comes with onnx

    redo = "export the model again with `cgdistill export RUN -o FILE.onnx`"
    try:
        model_bytes = path.read_bytes()
        graph = onnx.load_from_string(model_bytes)
    except OSError as exc:
        raise CgdistillError(f"Cannot read model file {path}: {exc.strerror or exc}.") from None
    except DecodeError as exc:
        raise CgdistillError(f"{path} is not a readable ONNX file ({exc}); it may be truncated: {redo}.") from None
    props = {entry.key: entry.value for entry in graph.metadata_props}
    if props.get("format") != FORMAT:
        raise CgdistillError(
            f"{path} is an ONNX file without cgdistill's metadata (format=cgdistill), so which way it translates "
            f"is unknown; {redo}."
        )
    inputs = {value.name for value in graph.graph.input}
    outputs = {value.name for value in graph.graph.output}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise CgdistillError(
            f"{path} does not map '{INPUT_NAME}' to '{OUTPUT_NAME}' as cgdistill's ONNX files do; it was changed "
            f"after export: {redo}."
        )
    # Exports before format_version was recorded wrote model format 1.
    info = info_from_metadata({"format_version": "1", **props}, path)
    if info.kind != "generator":
        raise CgdistillError(f"{path} holds a {info.kind}, not a generator.")
    return model_bytes, info


def read_onnx_info(path: Path | str) -> ModelInfo:
    """What an exported ONNX file records (direction, teacher, dataset, config), as a ``.safetensors`` file's."""
    return load_onnx(path)[1]
