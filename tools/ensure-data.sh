#!/bin/sh
# Make sure Fashion-MNIST's four IDX files are somewhere the loader looks.
# Installs Debian's dataset-fashion-mnist when apt is usable (root, or sudo
# without a password); otherwise says what to do and fails.
PY=${PY:-.venv/bin/python}
check() { "$PY" -c 'from edge_runtime import dataset; print("Fashion-MNIST:", dataset.find_data_dir())' 2>/dev/null; }
check && exit 0

. "$(dirname "$0")/apt-sudo.sh"
if [ "$SUDO" = none ]; then
    echo "error: Fashion-MNIST not found and apt-get is not usable here. Do one of:" >&2
    echo "  sudo apt-get install dataset-fashion-mnist" >&2
    echo "  put the four IDX .gz files in a directory and set FASHION_MNIST_DIR=DIR" >&2
    exit 1
fi
echo "Installing Debian's dataset-fashion-mnist ..."
$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; } \
    || { echo "error: apt-get install dataset-fashion-mnist failed" >&2; exit 1; }
check || { "$PY" -c 'from edge_runtime import dataset; dataset.find_data_dir()'; exit 1; }
