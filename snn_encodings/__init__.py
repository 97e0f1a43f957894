"""snn-encodings: radix, TTFS-Quartz and init-compensated rate spike encodings.

Public API: the neuron specs (``ICRate``, ...), :func:`convert`, :func:`evaluate`,
:func:`finetune`, :func:`save_network` / :func:`load_network`, the encoding records
(:func:`encoding_for`, :func:`register_encoding`), and the ``export`` subpackage (netx, NIR;
imported on first use). Framework adapters live in ``snn_encodings.adapters``.
"""

from __future__ import annotations

from snn_encodings.conversion import (
    ClipQuant,
    Evaluation,
    SpikingNetwork,
    convert,
    evaluate,
    finetune,
    load_network,
    save_network,
)
from snn_encodings.encoding import Encoding, encoding_for, register_encoding
from snn_encodings.specs import ALL_SPECS, ICRate, Quartz, Radix, Spec

__all__ = [
    "ALL_SPECS",
    "ClipQuant",
    "Encoding",
    "Evaluation",
    "ICRate",
    "Quartz",
    "Radix",
    "Spec",
    "SpikingNetwork",
    "convert",
    "encoding_for",
    "evaluate",
    "export",
    "finetune",
    "load_network",
    "register_encoding",
    "save_network",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "export":
        import importlib

        return importlib.import_module("snn_encodings.export")
    raise AttributeError(f"module 'snn_encodings' has no attribute {name!r}")
