#!/usr/bin/env bash
# Build the optional Lava environment used by the `lava` tests (tests/export/test_lava_roundtrip.py).
#
#   bash .ci/lava_env.sh [DIR]        # DIR defaults to .lava-venv in the repository root
#
# lava-nc 0.10.0 and lava-dl 0.6.0 declare Requires-Python <3.11 but are pure Python. This script
# installs them into a separate Python 3.11 venv with --no-deps --ignore-requires-python and patches
# the one 3.11 incompatibility (a dataclass field with a mutable default in
# lava/magma/compiler/var_model.py). Every workaround lives here, applied to this venv only; the
# user's environment is never touched. netx is imported without running slayer/__init__ (which
# needs opencv and torchvision) by snn_encodings.export.lava_run.
#
# Idempotent: an existing venv that already imports netx and our package is left as it is.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.lava-venv}"
PY="${PYTHON311:-python3.11}"

check() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
from snn_encodings.export.lava_run import import_netx
import_netx()
PY
}

if [ -x "$VENV/bin/python" ] && (cd "$ROOT" && check); then
    echo "lava_env: $VENV already works; nothing to do"
    exit 0
fi

echo "lava_env: building $VENV"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
# 1. torch: the local CPU wheel (the machine's pip constraints cap torch at this version)
"${PIP[@]}" "torch==2.13.0"
# 2. lava's own requirements, pinned as lava-nc 0.10.0 / lava-dl 0.6.0 declare them (+ tqdm, ours)
"${PIP[@]}" "numpy>=1.24.4,<2" "scipy>=1.10.1,<2" "networkx<=2.8.7" "asteval>=0.9.31,<0.10" \
    "scikit-learn>=1.5,<2" "h5py>=3.7,<4" "matplotlib>=3.5.2,<4" "tqdm>=4.60"
# 3. the pure-Python Lava wheels, bypassing their <3.11 marker
"${PIP[@]}" --no-deps --ignore-requires-python "lava-nc==0.10.0" "lava-dl==0.6.0"
# 4. Python 3.11 rejects `field: ByteEncoder = ByteEncoder()` (mutable dataclass default)
VAR_MODEL="$("$VENV/bin/python" -c 'import importlib.util as u; print(u.find_spec("lava.magma.compiler").submodule_search_locations[0])')/var_model.py"
sed -i \
    -e 's/^from dataclasses import dataclass, InitVar$/from dataclasses import dataclass, InitVar, field/' \
    -e 's/: ByteEncoder = ByteEncoder()/: ByteEncoder = field(default_factory=ByteEncoder)/' \
    "$VAR_MODEL"
# 5. our package, editable, without its dependencies (torch and numpy are already there)
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT" 2>/dev/null \
    || "${PIP[@]}" --no-deps -e "$ROOT"

if ! (cd "$ROOT" && check); then
    echo "lava_env: $VENV was built but netx does not import; see the errors above" >&2
    (cd "$ROOT" && "$VENV/bin/python" -c 'from snn_encodings.export.lava_run import import_netx; import_netx()')
    exit 1
fi
echo "lava_env: ready ($VENV)"
