"""Datasets and pretrained weights: the registry, downloads, the embedded dataset, the loaders.

Importing this package stays cheap (no torch, no rich): the download API is resolved on first use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "download_dataset": "cgdistill.data.download",
    "list_datasets": "cgdistill.data.download",
    "fetch": "cgdistill.data.download",
    "DATASETS": "cgdistill.data.registry",
    "PRETRAINED": "cgdistill.data.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cgdistill.data' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
