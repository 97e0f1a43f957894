"""``python -m snn_encodings`` runs the command line."""

from __future__ import annotations

import sys

from snn_encodings.cli import main

sys.exit(main())
