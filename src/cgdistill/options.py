"""What the command line shows before it does any work: choices, defaults and help text.

They belong to library modules that import torch (nets, device, translate, report, fid_inception,
demo), which import them from here; the CLI reads them here, so ``--help`` and ``--version`` do not
wait seconds for torch to load.
"""

from __future__ import annotations

from pathlib import Path

DIRECTIONS = ("A2B", "B2A")

# Generator architecture (nets/generator.py).
NORMS = ("instance", "instance-affine", "batch")
UPSAMPLES = ("deconv", "resize-conv")
PADDINGS = ("zeros", "reflect")
BLOCKS = ("standard", "separable")
# Resolution of the stem and head: the published full-resolution 7x7 convs, or 3x3 convs at half
# resolution on 2x2 pixel blocks (space-to-depth in, pixel shuffle out).
ENDS = ("full", "half")

# Training (train/config.py holds the flags; the modules named own the choices and import them from here).
AMP_DTYPES = ("bf16", "fp16")  # train/runtime.py
COMPILE_MODES = ("default", "reduce-overhead")  # train/runtime.py
PRESET_NAMES = ("default", "fast", "fastest")  # train/presets.py (PRESETS holds what each one sets)
INITS = ("copy", "copy-outer", "random")  # train/student.py (build_student)

DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."
# threads.py: the CPU thread count of translate, compare, export and demo (the trainers' is a config field).
THREADS_HELP = (
    "CPU threads (default: the cores free of other work, re-chosen every few seconds; OMP_NUM_THREADS also fixes it)."
)

# translate (translate.py, policy.py, engines.py): the choices, and the help generated from them.
DEFAULT_MAX_SIDE = 1024
DEFAULT_BATCH_SIZE = 4
DEFAULT_TRANSLATE_OUTPUT = Path("translated")
ENGINES = ("auto", "torch", "onnxruntime")  # engines.py
ENGINE_HELP = (
    f"{' | '.join(ENGINES)}: auto is the faster of torch and onnxruntime for this model here (onnxruntime for an "
    ".onnx model); onnxruntime runs on the CPU and needs the onnx extra."
)
TILE_CHOICES = ("auto", "off")  # policy.py; or a tile side in pixels
TILE_HELP = (
    f"{' | '.join(TILE_CHOICES)} | a tile side in pixels: auto tiles, exactly, only images (and video frames) whose "
    "one pass would exceed --max-memory; off always runs one pass."
)
MAX_MEMORY_HELP = (
    "Peak memory while translating an image or a video frame, e.g. 1.5G or 800M (powers of 1024; default: what "
    "is in use plus 60% of the free RAM, or of the GPU's free memory)."
)

# export.py
EXPORT_FORMATS = ("onnx",)
EXPORT_FORMAT_HELP = f"Deployment format: {' | '.join(EXPORT_FORMATS)}."

# web/site.py: the longest photo side the web page translates as it is (WebAssembly is several times slower
# than native code, and a 32-bit address space bounds the activations of a larger photo).
WEB_MAX_SIDE = 512
DEFAULT_SERVE_PORT = 8000  # web/serve.py

# video.py: H.264 plays everywhere; CRF 18 is x264's "visually lossless" end of the usual range.
DEFAULT_VIDEO_CODEC = "libx264"
DEFAULT_VIDEO_QUALITY = 18

# report.py: test images shown in the comparison grid.
DEFAULT_GRID_ROWS = 4

# fid_inception.py: the pytorch-fid release's weights.
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"

# demo.py: the folder for everything the demo makes.
DEMO_OUTPUT = Path("cgdistill-demo")

# Held-out images the distiller measures its fidelity on while it trains (compare uses the whole test split).
FIDELITY_IMAGES = 8
