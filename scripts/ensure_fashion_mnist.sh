#!/usr/bin/env bash
# Makes Fashion-MNIST available offline for tfkd (see tfkd/data.py).
# Looks where tfkd.data looks; installs Debian's dataset-fashion-mnist when
# it is missing and this is a Debian/Ubuntu machine where we may use apt-get.
set -euo pipefail
for dir in "${TFKD_FASHION_MNIST_DIR:-/nonexistent}" \
           "${KERAS_HOME:-$HOME/.keras}/datasets/fashion-mnist" \
           /usr/share/datasets/fashion-mnist; do
  if [ -e "$dir/train-images-idx3-ubyte.gz" ] || [ -e "$dir/train-images-idx3-ubyte" ]; then
    echo "Fashion-MNIST found in $dir"
    exit 0
  fi
done
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "Installing Debian's dataset-fashion-mnist (offline Fashion-MNIST)..."
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
else
  echo "Fashion-MNIST not found offline; tfkd will try Keras's download." >&2
fi
