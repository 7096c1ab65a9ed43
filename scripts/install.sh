#!/usr/bin/env bash
# One-command set-up of sam_d2 on a fresh machine (CPU or CUDA).
#
#   bash scripts/install.sh            # creates ./.venv and installs everything into it
#   VENV=/path/to/venv bash scripts/install.sh
#
# Installs torch 2.14.1 / torchvision 0.29.1, Detectron2 at official commit a59f0563 (offline route:
# the sal-detectron2==0.7.2 wheel that carries exactly that commit's Python sources), Detectron2's
# runtime dependencies, and sam_d2 itself in editable mode with its `dev` extra (tests, the
# segment-anything==1.0 reference oracle). With network access to GitHub you may instead set
# D2_FROM_SOURCE=1 to build Detectron2 from the official repository at that commit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
D2_COMMIT=a59f05630a8f205756064244bf5beb8661f96180

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip wheel "setuptools<81"
"${PIP[@]}" install -q torch==2.14.1 torchvision==0.29.1

# Detectron2's runtime dependencies (the wheel below is installed without them).
"${PIP[@]}" install -q fvcore iopath pycocotools tabulate termcolor yacs cloudpickle matplotlib \
  omegaconf hydra-core packaging tqdm Pillow black "setuptools<81" timm tensorboard

if [ "${D2_FROM_SOURCE:-0}" = "1" ]; then
  "${PIP[@]}" install --no-build-isolation \
    "git+https://github.com/facebookresearch/detectron2.git@${D2_COMMIT}"
elif ! "$VENV/bin/python" -c "import detectron2.modeling.backbone.vit" 2>/dev/null; then
  SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  "${PIP[@]}" install -q --no-deps --only-binary=:all: --python-version 3.10 \
    --target "$SITE" --upgrade sal-detectron2==0.7.2
fi

"${PIP[@]}" install -q -e ".[dev]"
# SAM 2's reference package (parity tests only) is an sdist that builds against the installed torch
# and would otherwise compile a CUDA extension it does not need here.
SAM2_BUILD_CUDA=0 "${PIP[@]}" install -q --no-deps --no-build-isolation sam2==1.1.0

# Headless Chromium for the annotation app's browser test: Playwright drives the system browser
# (its own browser download is unreachable offline). Needs root; the test skips without it.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -q && apt-get install -y -q chromium
  else
    echo "note: no chromium; tests/test_annotate_browser.py will skip" \
      "(as root: apt-get install -y chromium)" >&2
  fi
fi
"$VENV/bin/python" -c "import detectron2, sam_d2, torch; print('sam_d2 ready: torch', torch.__version__, '| detectron2', detectron2.__version__)"
