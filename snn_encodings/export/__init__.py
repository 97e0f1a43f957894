"""Export converted networks: Loihi netx HDF5 (:func:`netx`) and lossy NIR (:func:`nir`).

``snn_encodings.export.netx(model, path)`` writes a file lava-dl's ``netx.hdf5.Network`` loads;
:mod:`~snn_encodings.export.fixed_point` runs such a file as Lava's fixed-point simulator does.
h5py (the ``lava`` extra) is imported only when a file is written or read.
"""

from __future__ import annotations

from snn_encodings.export.netx import ExportReport, netx, write_netx
from snn_encodings.export.netx_read import read_netx
from snn_encodings.export.nir import nir

__all__ = ["ExportReport", "netx", "nir", "read_netx", "write_netx"]
