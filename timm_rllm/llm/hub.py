"""One decoder layer from the Hugging Face Hub, fetching only that layer's bytes.

config.json and the shard index come through `hf_hub_download` (so they land in the usual
Hugging Face cache); each shard's safetensors header and then the layer's tensors come through
HTTP Range requests on huggingface_hub's own session, endpoint and headers (`HF_ENDPOINT`,
`HF_TOKEN`, proxies). With `HF_HUB_OFFLINE=1`, a full snapshot already in the Hugging Face cache
is read instead.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
from tqdm.auto import tqdm

from .families import check_tensors, config_from_hf, hf_layer_prefix, resolve_layer
from .sources import BlockSourceError, BlockWeights, read_hf_folder

SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
MAX_HEADER = 100 * 2**20  # safetensors' own limit on header size


class HubAccessError(BlockSourceError):
    """The Hub refused or could not serve a request; the message says how to fix it."""


class BlockNotCachedError(HubAccessError):
    """No network (or HF_HUB_OFFLINE=1) and the block is in neither cache."""


def _explain(e: Exception, repo_id: str, revision: str | None) -> HubAccessError:
    """A message that names the fix, for the errors huggingface_hub raises."""
    if isinstance(e, LocalEntryNotFoundError):  # before EntryNotFoundError, its base class
        return BlockNotCachedError(
            f"cannot reach {constants.ENDPOINT} (offline, or HF_HUB_OFFLINE=1) and {repo_id} is not in the block "
            f"cache nor fully in the Hugging Face cache. Run `timm-rllm extract {repo_id} --layer N` once with "
            "network (only that layer is downloaded), or extract from a local copy: "
            "`timm-rllm extract /path/to/folder --layer N` and pass llm_source='/path/to/folder'."
        )
    if isinstance(e, GatedRepoError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 401:
            how = "you are not logged in: run `hf auth login` or set HF_TOKEN to a token of an account that has access"
        else:
            how = (f"your token's account has not been granted access: accept the terms at "
                   f"https://huggingface.co/{repo_id} (then wait for approval if the repo asks for it)")
        return HubAccessError(f"{repo_id} is a gated repo and {how}.")
    if isinstance(e, RevisionNotFoundError):
        return HubAccessError(f"{repo_id} has no revision {revision!r}: give a branch, tag or commit hash that exists.")
    if isinstance(e, EntryNotFoundError):
        return HubAccessError(f"{repo_id}: {e.args[0].splitlines()[-1] if e.args else e}. Only safetensors "
                              "checkpoints (model.safetensors or model.safetensors.index.json) can be read by range.")
    if isinstance(e, RepositoryNotFoundError):
        return HubAccessError(f"{repo_id} was not found on {constants.ENDPOINT}: check the name, or log in "
                              "(`hf auth login` / HF_TOKEN) if it is private.")
    return HubAccessError(f"{repo_id}: request to {constants.ENDPOINT} failed: {e}")


def _get_range(url: str, start: int, end: int, headers: dict[str, str], bar: tqdm | None = None) -> bytearray:
    """Bytes [start, end) of a file, through huggingface_hub's HTTP session; all of them or an error."""
    buf = bytearray(end - start)
    got = 0
    try:
        with get_session().stream("GET", url, headers={**headers, "Range": f"bytes={start}-{end - 1}"},
                                  follow_redirects=True) as response:
            hf_raise_for_status(response)
            if response.status_code != 206:
                raise HubAccessError(f"{url}: the server ignored the Range request (HTTP {response.status_code}); "
                                     "refusing to download the whole file")
            for chunk in response.iter_bytes():
                if got + len(chunk) > len(buf):
                    raise HubAccessError(f"{url}: the server sent more than the {end - start} bytes asked for")
                buf[got:got + len(chunk)] = chunk
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except (HfHubHTTPError, HubAccessError):
        raise
    except Exception as e:  # connection refused or dropped: httpx transport errors
        raise HubAccessError(f"{url}: the download broke off after {got} of {end - start} bytes ({e!r}); "
                             "nothing was cached, run the command again") from e
    if got != end - start:
        raise HubAccessError(f"{url}: got {got} of {end - start} bytes; the download was truncated, nothing was "
                             "cached, run the command again")
    return buf


def read_safetensors_header(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """(offset of the data section, header dict) of a remote safetensors file, by two range requests."""
    (length,) = struct.unpack("<Q", _get_range(url, 0, 8, headers))
    if not 0 < length <= MAX_HEADER:
        raise HubAccessError(f"{url} is not a safetensors file (header length {length})")
    return 8 + length, json.loads(_get_range(url, 8, 8 + length, headers))


def read_hub(repo_id: str, layer: int, revision: str | None = None, dtype: torch.dtype | None = torch.bfloat16,
             progress: bool = True) -> BlockWeights:
    """Fetch one layer of a Hub repo: config, index and headers, then only the layer's byte ranges."""
    if constants.HF_HUB_OFFLINE:
        return _read_offline(repo_id, layer, revision, dtype)
    try:
        config_path = Path(hf_hub_download(repo_id, "config.json", revision=revision))
        commit = config_path.parent.name  # snapshots/<commit>/config.json
        hf_config = json.loads(config_path.read_text())
        config, num_layers = config_from_hf(hf_config)
        index = resolve_layer(layer, num_layers)
        try:
            index_path = hf_hub_download(repo_id, "model.safetensors.index.json", revision=commit)
            weight_map = json.loads(Path(index_path).read_text())["weight_map"]
            prefix = hf_layer_prefix(weight_map, index)
            files = sorted({f for name, f in weight_map.items() if name.startswith(prefix)})
        except EntryNotFoundError:
            files, prefix = ["model.safetensors"], None

        headers = build_hf_headers()
        plans, total = [], 0
        for filename in files:
            url = hf_hub_url(repo_id, filename, revision=commit)
            data_start, header = read_safetensors_header(url, headers)
            prefix = prefix or hf_layer_prefix(header, index)
            spans = [(data_start + info["data_offsets"][0], data_start + info["data_offsets"][1], name)
                     for name, info in header.items() if name.startswith(prefix)]
            plans.append((url, header, spans))
            total += sum(end - start for start, end, _ in spans)

        # One request per tensor: each buffer is converted and dropped before the next arrives, so peak
        # memory stays near one layer in the target dtype.
        tensors: dict[str, torch.Tensor] = {}
        file_digest = hashlib.sha256(config_path.read_bytes())
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"{repo_id} layer {index}", disable=not progress) as bar:
            for url, header, spans in plans:
                file_digest.update(json.dumps(header, sort_keys=True).encode())
                for start, end, name in spans:
                    info = header[name]
                    if info["dtype"] not in SAFETENSORS_DTYPES:
                        raise HubAccessError(f"{name} has dtype {info['dtype']}, which is not supported")
                    raw = _get_range(url, start, end, headers, bar)
                    t = torch.frombuffer(raw, dtype=SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
                    tensors[name[len(prefix):]] = t.to(dtype) if dtype is not None and t.dtype != dtype else t
    except (HfHubHTTPError, LocalEntryNotFoundError) as e:
        raise _explain(e, repo_id, revision) from e
    check_tensors(tensors, config, f"{repo_id}@{commit} layer {index}")
    return BlockWeights(tensors=tensors, config=config, source=repo_id, layer=index, num_layers=num_layers,
                        revision=commit, file_hash=file_digest.hexdigest(), license=str(hf_config.get("license", "")),
                        extra={"revision_requested": revision or "main"})


def _read_offline(repo_id: str, layer: int, revision: str | None, dtype: torch.dtype | None) -> BlockWeights:
    """HF_HUB_OFFLINE=1: read the layer from a snapshot in the Hugging Face cache, if one is there."""
    config_path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if not isinstance(config_path, str):
        raise _explain(LocalEntryNotFoundError("offline"), repo_id, revision)
    try:
        weights = read_hf_folder(Path(config_path).parent, layer, dtype=dtype)
    except (FileNotFoundError, BlockSourceError) as e:  # a snapshot with config.json but not the weights
        raise _explain(LocalEntryNotFoundError(str(e)), repo_id, revision) from e
    weights.source = repo_id
    weights.extra = {"revision_requested": revision or "main"}
    return weights
