"""Command line: ``snn-encodings demo | convert | evaluate``. Parsing and printing only.

Under ``torchrun`` the commands calibrate and evaluate on every process's shard and merge the
results (:mod:`snn_encodings.distributed`); only rank 0 prints and writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from snn_encodings.conversion import SpikingNetwork, convert, evaluate, save_network
from snn_encodings.data.mnist import mnist_split
from snn_encodings.distributed import (
    broadcast_module,
    init_from_env,
    is_main_process,
    main_process_first,
    shard_loader,
)
from snn_encodings.encoding import encoding_named
from snn_encodings.errors import SnnEncodingsError
from snn_encodings.files import check_writable
from snn_encodings.models import ARCHITECTURES, build, train_mnist
from snn_encodings.specs import ALL_SPECS, Spec

__all__ = ["demo_specs", "load_model", "main", "parse_spec"]


def parse_spec(text: str) -> Spec:
    """Parse ``"name:field=value,..."`` (e.g. ``"icrate:steps=16,init=data"``) into a spec.

    Raises:
        SnnEncodingsError: for an unknown encoding, field or unparsable value.
    """
    name, _, rest = text.partition(":")
    classes = {cls.__name__.lower(): cls for cls in ALL_SPECS}
    if name.lower() not in classes:
        raise SnnEncodingsError(f"unknown encoding {name!r}; choose one of {sorted(classes)}")
    cls = classes[name.lower()]
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, sep, raw = item.partition("=")
        if key not in fields:
            raise SnnEncodingsError(
                f"{cls.__name__} has no field {key!r}; fields: {sorted(fields)}"
            )
        if not sep:
            raise SnnEncodingsError(
                f"{cls.__name__}.{key} needs a value: write {key}=VALUE, e.g. "
                f"'{name.lower()}:{key}=...'"
            )
        kwargs[key] = _parse_value(raw, hints[key], f"{cls.__name__}.{key}")
    return cls(**kwargs)


def _parse_value(raw: str, hint: object, where: str) -> object:
    """``raw`` as the type ``hint`` names; ``X | None`` also takes ``none``."""
    options = [h for h in typing.get_args(hint) if h is not type(None)]
    if type(None) in typing.get_args(hint) and len(options) == 1:
        return None if raw.lower() == "none" else _parse_value(raw, options[0], where)
    if hint is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise SnnEncodingsError(f"{where} must be true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise SnnEncodingsError(f"{where} must be an integer, got {raw!r}") from None
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            raise SnnEncodingsError(f"{where} must be a number, got {raw!r}") from None
    return raw


def demo_specs(
    steps: Sequence[int],
    encodings: Sequence[str],
    t_max: Sequence[int] = (8, 16),
    radix_steps: Sequence[int] = (4, 6),
) -> list[tuple[str, Spec]]:
    """The demo's conversions: every available encoding and variant.

    IC-rate: each initialisation with and without compensation at each of ``steps``; Quartz:
    exact and paper mode at each ``t_max`` (closed-form path); radix: exact and paper mode at
    each of ``radix_steps``.
    """
    lengths = {"steps": steps, "t_max": t_max, "radix_steps": radix_steps}
    specs: list[tuple[str, Spec]] = []
    for name in encodings:
        try:
            record = encoding_named(name)
        except LookupError as error:
            raise SnnEncodingsError(str(error)) from None
        specs.extend(record.demo(lengths[record.demo_lengths]))
    return specs


def load_model(path: str, architecture: str | None, trust_file: bool) -> nn.Module:
    """Load a user's ANN: a ``state_dict`` (with ``architecture``) or a pickled module.

    ``torch.load(weights_only=True)`` is used unless ``trust_file`` (pickled modules need it).

    Raises:
        SnnEncodingsError: for a missing, corrupt or mismatched file, with what to do.
    """
    file = Path(path)
    if not file.exists():
        raise SnnEncodingsError(f"model file {path!r} does not exist")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=not trust_file)
    except Exception as error:  # torch.load raises many types for bad files
        hint = (
            ""
            if trust_file
            else " (a pickled nn.Module needs --trust-file; use it only for files you trust)"
        )
        raise SnnEncodingsError(
            f"cannot load {path!r}: {type(error).__name__}: {error}{hint}"
        ) from None
    if isinstance(obj, nn.Module):
        return obj.eval()
    if isinstance(obj, dict):
        if architecture is None:
            raise SnnEncodingsError(
                f"{path!r} holds a state_dict: pass --architecture "
                f"({', '.join(sorted(ARCHITECTURES))})"
            )
        model = build(architecture)
        try:
            model.load_state_dict(obj)
        except RuntimeError as error:
            raise SnnEncodingsError(
                f"{path!r} does not match architecture {architecture!r}: {error}"
            ) from None
        return model.eval()
    raise SnnEncodingsError(f"{path!r} holds a {type(obj).__name__}, not a module or state_dict")


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a limit of 0 or below would silently select nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _device(text: str) -> torch.device:
    """argparse type: a torch device that can hold data (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a torch device; use e.g. cpu, cuda or cuda:0"
        ) from None
    if device.type == "meta":
        raise argparse.ArgumentTypeError(
            "meta tensors hold no data, so nothing can be converted or evaluated on them; "
            "use cpu or cuda"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this torch build sees no CUDA device; use cpu")
    return device


def _loaders(args: argparse.Namespace) -> tuple[DataLoader, DataLoader]:
    calibration = shard_loader(
        mnist_split("train", args.data_dir, limit=args.calibration_limit), 250
    )
    evaluation = shard_loader(mnist_split("eval", args.data_dir, limit=args.eval_limit), 250)
    return calibration, evaluation


def _row(cells: Sequence[object], widths: Sequence[int]) -> str:
    return "  ".join(
        str(c).ljust(w) if i == 0 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths))
    )


def _table(rows: list[list[object]]) -> str:
    header = ["encoding", "steps", "latency", "accuracy %", "spikes/img", "syn.ops/img"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    lines += [_row(r, widths) for r in rows]
    return "\n".join(lines)


def _result_row(
    label: str, network: SpikingNetwork, loader: DataLoader, progress: bool, distributed: bool
) -> list[object]:
    result = evaluate(network, loader, progress=progress, distributed=distributed)
    return [
        label,
        result.steps,
        result.latency,
        f"{100 * result.accuracy:.2f}",
        f"{result.spikes_per_sample:,.0f}",
        f"{result.synaptic_events_per_sample:,.0f}",
    ]


def _demo(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with main_process_first():
        ann = train_mnist(
            args.architecture,
            epochs=args.epochs,
            data_dir=args.data_dir,
            progress=not args.quiet and is_main_process(),
        )
    ann = broadcast_module(ann).to(args.device)
    calibration, evaluation = _loaders(args)
    ann_result = evaluate(ann, evaluation, progress=False, distributed=args.distributed)
    rows: list[list[object]] = [
        [f"ANN ({args.architecture})", "-", "-", f"{100 * ann_result.accuracy:.2f}", "-", "-"]
    ]
    for label, spec in demo_specs(args.steps, args.encodings, args.t_max, args.radix_steps):
        network = convert(ann, spec, calibration, device=args.device, distributed=args.distributed)
        rows.append(_result_row(label, network, evaluation, not args.quiet, args.distributed))
        if not args.quiet and is_main_process():
            print(_row(rows[-1], [len(str(c)) for c in rows[-1]]), file=sys.stderr)
    if is_main_process():
        print(f"MNIST evaluation split: {ann_result.samples} images")
        print(_table(rows))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    ann = load_model(args.model, args.architecture, args.trust_file).to(args.device)
    calibration, evaluation = _loaders(args)
    rows: list[list[object]] = []
    ann_result = evaluate(ann, evaluation, progress=False, distributed=args.distributed)
    rows.append(["ANN", "-", "-", f"{100 * ann_result.accuracy:.2f}", "-", "-"])
    for text in args.spec:
        network = convert(
            ann, parse_spec(text), calibration, device=args.device, distributed=args.distributed
        )
        rows.append(_result_row(text, network, evaluation, not args.quiet, args.distributed))
    if is_main_process():
        print(_table(rows))
    return 0


def _convert(args: argparse.Namespace) -> int:
    check_writable(args.output, "convert --output")  # before the conversion, not after
    ann = load_model(args.model, args.architecture, args.trust_file).to(args.device)
    calibration, _ = _loaders(args)
    network = convert(
        ann, parse_spec(args.spec), calibration, device=args.device, distributed=args.distributed
    )
    if is_main_process():
        print(f"wrote {save_network(network, args.output)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snn-encodings",
        description="Radix, TTFS-Quartz and IC-rate spike encodings: convert and evaluate SNNs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", default=None, help="folder with MNIST IDX files (default: the shipped copy)"
    )
    common.add_argument("--device", type=_device, default="cpu", help="torch device (default: cpu)")
    common.add_argument(
        "--eval-limit",
        type=_positive_int,
        default=None,
        help="evaluate on the first N evaluation images",
    )
    common.add_argument(
        "--calibration-limit",
        type=_positive_int,
        default=2000,
        help="calibration images (default 2000)",
    )
    common.add_argument("--quiet", action="store_true", help="no progress output")

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="train a small CNN on MNIST, convert it with every encoding, print a table",
    )
    demo.add_argument("--architecture", default="convnet", choices=sorted(ARCHITECTURES))
    demo.add_argument("--epochs", type=_positive_int, default=8)
    demo.add_argument(
        "--steps", type=_positive_int, nargs="+", default=[8, 32], help="IC-rate time steps"
    )
    demo.add_argument(
        "--t-max", type=_positive_int, nargs="+", default=[8, 16], help="Quartz steps per layer"
    )
    demo.add_argument(
        "--radix-steps",
        type=_positive_int,
        nargs="+",
        default=[4, 6],
        help="radix digits (steps per layer)",
    )
    names = [cls.__name__.lower() for cls in ALL_SPECS]
    demo.add_argument("--encodings", nargs="+", default=names, choices=names)
    demo.set_defaults(run=_demo)

    saved = argparse.ArgumentParser(add_help=False)
    saved.add_argument(
        "model", help="torch.save'd state_dict (with --architecture) or module (with --trust-file)"
    )
    saved.add_argument("--architecture", default=None, choices=sorted(ARCHITECTURES))
    saved.add_argument(
        "--trust-file",
        action="store_true",
        help="allow pickled modules (torch.load weights_only=False)",
    )

    ev = sub.add_parser(
        "evaluate",
        parents=[common, saved],
        help="convert a saved ANN with the given specs and evaluate on MNIST",
    )
    ev.add_argument("--spec", nargs="+", required=True, help='e.g. "icrate:steps=16,init=data"')
    ev.set_defaults(run=_evaluate)

    cv = sub.add_parser(
        "convert",
        parents=[common, saved],
        help="convert a saved ANN with one spec and save the spiking network (load_network reads it)",
    )
    cv.add_argument("--spec", required=True, help='e.g. "icrate:steps=16,init=data"')
    cv.add_argument("--output", required=True, help="file to write (save_network format)")
    cv.set_defaults(run=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``snn-encodings`` console script."""
    args = _parser().parse_args(argv)
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    args.distributed = init_from_env()  # under torchrun: one process per shard; else as before
    try:
        return int(args.run(args))
    except SnnEncodingsError as error:
        print(f"snn-encodings: error: {error}", file=sys.stderr)
        return 2
    finally:
        if args.distributed and owns_group:
            torch.distributed.destroy_process_group()
