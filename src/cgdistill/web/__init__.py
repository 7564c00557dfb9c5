"""The student in a web page: a static site that runs the exported ONNX model with onnxruntime-web
(``site.py``), the runtime's files from the npm registry (``runtime.py``), and a local server with the
headers WebAssembly threads need (``serve.py``).

``serve.py`` and ``runtime.py`` import neither torch nor onnx, so ``cgdistill serve`` starts at once.
"""

from __future__ import annotations

import json
from pathlib import Path

SITE_FILE = "cgdistill-web.json"  # what an export holds; also how a later export knows it may replace the folder
SITE_FORMAT = "cgdistill-web"


def is_web_export(folder: Path | str) -> bool:
    """Whether ``folder`` holds a site that ``cgdistill export --web`` wrote."""
    try:
        manifest = json.loads((Path(folder) / SITE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == SITE_FORMAT
