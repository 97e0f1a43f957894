"""The SpikingJelly version check, kept free of SpikingJelly imports so it can be tested."""

from __future__ import annotations

__all__ = ["check_spikingjelly"]


def check_spikingjelly(version: str, has_functional_api: bool) -> None:
    """Raise ImportError unless the installed SpikingJelly is a 2.x release.

    Args:
        version: the installed distribution's version string.
        has_functional_api: whether ``neuron.BaseNode`` has ``single_step_functional_forward``
            (the 2.x functional-state API the nodes are built on).
    """
    major = version.split(".", 1)[0]
    too_old = not has_functional_api or (major.isdigit() and int(major) < 2)
    too_new = major.isdigit() and int(major) >= 3
    if too_old or too_new:
        raise ImportError(
            f"snn_encodings.adapters.spikingjelly needs SpikingJelly >=2.0,<3, found {version} "
            "(0.0.0.0.14 and older lack the BaseNode functional-state API the nodes are built "
            'on): pip install "spikingjelly>=2,<3"'
        )
