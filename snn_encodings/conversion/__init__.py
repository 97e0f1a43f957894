"""The shared ANN-to-SNN conversion pipeline and its per-encoding rules."""

from __future__ import annotations

from snn_encodings.conversion.convert import convert
from snn_encodings.conversion.evaluate import Evaluation, evaluate, with_steps
from snn_encodings.conversion.finetune import finetune
from snn_encodings.conversion.network import LayerCounts, SpikingNetwork, Stage
from snn_encodings.conversion.rules import Rule, register_rule, rule_for
from snn_encodings.conversion.save import load_network, save_network
from snn_encodings.conversion.twin import ClipQuant, clip_quant

__all__ = [
    "ClipQuant",
    "Evaluation",
    "LayerCounts",
    "Rule",
    "SpikingNetwork",
    "Stage",
    "clip_quant",
    "convert",
    "evaluate",
    "finetune",
    "load_network",
    "register_rule",
    "rule_for",
    "save_network",
    "with_steps",
]
