"""One decoder layer from the Hugging Face Hub, fetching only that layer's bytes.

config.json and the shard index come through `hf_hub_download` (so they land in the usual
Hugging Face cache); each shard's safetensors header and then the layer's tensors come through
HTTP Range requests on huggingface_hub's own session, endpoint and headers (`HF_ENDPOINT`,
`HF_TOKEN`, proxies). With `HF_HUB_OFFLINE=1`, a full snapshot already in the Hugging Face cache
is read instead.

Nothing hangs: every request has a timeout (`HF_HUB_ETAG_TIMEOUT` for metadata, `HF_HUB_DOWNLOAD_TIMEOUT`
for bytes, read when the request is made). Nothing unchecked is used: a safetensors header must
describe a file that could exist (see `check_safetensors_header`) and the layer the config describes
before any tensor is requested.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from itertools import pairwise
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

from .._io import SAFETENSORS_DTYPES
from .families import check_tensors, config_from_hf, hf_layer_prefix, resolve_layer
from .sources import BlockSourceError, BlockWeights, read_hf_folder

try:  # huggingface_hub's HTTP client: httpx2 from 2.x on, httpx in 1.x
    from httpx2 import HTTPError, TimeoutException
except ImportError:  # pragma: no cover
    from httpx import HTTPError, TimeoutException

# Bits per element of every safetensors dtype (the format's own list), to check sizes against shapes.
SAFETENSORS_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64,
}
MAX_HEADER = 100 * 2**20  # safetensors' own limit on header size
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


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


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or repr(e)


def _get_range(
    url: str, start: int, end: int, headers: dict[str, str], bar: tqdm | None = None
) -> tuple[bytearray, int]:
    """(bytes [start, end) of a file, the file's size), through huggingface_hub's HTTP session; all of
    them or an error. The server must answer the range asked for (206 and its Content-Range); no byte
    for HF_HUB_DOWNLOAD_TIMEOUT seconds (connect, read) is an error, never a hang."""
    timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT
    got = 0
    try:
        with get_session().stream("GET", url, headers={**headers, "Range": f"bytes={start}-{end - 1}"},
                                  follow_redirects=True, timeout=timeout) as response:
            hf_raise_for_status(response)
            if response.status_code != 206:
                raise HubAccessError(f"{url}: the server ignored the Range request (HTTP {response.status_code}); "
                                     "refusing to download the whole file; nothing was cached")
            match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or (int(match[1]), int(match[2]) + 1) != (start, end):
                raise HubAccessError(f"{url}: asked for bytes {start}-{end - 1}, the server answered "
                                     f"{response.headers.get('Content-Range')!r}; nothing was cached")
            buf = bytearray(end - start)  # allocated once the answer is the one asked for
            for chunk in response.iter_bytes():
                if got + len(chunk) > len(buf):
                    raise HubAccessError(f"{url}: the server sent more than the {end - start} bytes asked for")
                buf[got:got + len(chunk)] = chunk
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except (HfHubHTTPError, HubAccessError):
        raise
    except TimeoutException as e:
        raise HubAccessError(f"{url}: no data for {timeout} s (HF_HUB_DOWNLOAD_TIMEOUT) after {got} of {end - start} "
                             "bytes; nothing was cached. Run the command again (a slow link: raise "
                             "HF_HUB_DOWNLOAD_TIMEOUT)") from e
    except HTTPError as e:  # connection refused or dropped
        raise HubAccessError(f"{url}: the download broke off after {got} of {end - start} bytes ({e!r}); "
                             "nothing was cached, run the command again") from e
    if got != end - start:
        raise HubAccessError(f"{url}: got {got} of {end - start} bytes; the download was truncated, nothing was "
                             "cached, run the command again")
    return buf, int(match[3])


def check_safetensors_header(header: Any, data_size: int, where: str) -> None:
    """Refuse a header whose tensors could not be what it says, before anything is allocated or fetched:
    a JSON object of entries, each with a known dtype, a shape, and ``data_offsets`` inside the data
    section (``data_size`` bytes) holding exactly shape x dtype bytes, no two overlapping. (For local
    files safetensors itself checks the same when it opens them.)"""

    def bad(what: str) -> HubAccessError:
        return HubAccessError(f"{where}: not a valid safetensors header ({what}); no tensor was fetched, "
                              "nothing was cached")

    if not isinstance(header, dict):
        raise bad("not a JSON object")
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise bad(f"entry {name!r} is not a tensor description") from None
        if dtype not in SAFETENSORS_BITS:
            raise bad(f"{name} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"{name} has shape {shape!r}")
        if not (type(start) is int and type(end) is int and 0 <= start <= end <= data_size):
            raise bad(f"{name} lies outside the file: bytes {start}-{end} of a {data_size}-byte data section")
        if math.prod(shape) * SAFETENSORS_BITS[dtype] != 8 * (end - start):
            raise bad(f"{name}: {end - start} bytes cannot hold {dtype} {shape}")
        spans.append((start, end, name))
    spans.sort()
    for (_, end, first), (start, _, second) in pairwise(spans):
        if start < end:
            raise bad(f"{first} and {second} overlap")


def read_safetensors_header(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """(offset of the data section, header dict) of a remote safetensors file, by two range requests;
    the header is checked (`check_safetensors_header`) against the file's size."""
    raw, file_size = _get_range(url, 0, 8, headers)
    (length,) = struct.unpack("<Q", raw)
    if not 0 < length <= min(MAX_HEADER, file_size - 8):
        raise HubAccessError(f"{url} is not a safetensors file (header length {length}, file size {file_size})")
    try:
        header = json.loads(_get_range(url, 8, 8 + length, headers)[0])
    except ValueError as e:  # not UTF-8 or not JSON
        raise HubAccessError(f"{url}: not a valid safetensors header ({_one_line(e)}); nothing was cached") from e
    check_safetensors_header(header, file_size - 8 - length, url)
    return 8 + length, header


def _check_layer_header(infos: dict[str, dict[str, Any]], config, where: str) -> None:
    """The layer's tensors as the headers describe them: supported dtypes and exactly the shapes the
    config gives, checked on meta tensors (no memory) before any byte of them is fetched."""
    for name, info in infos.items():
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise HubAccessError(f"{where}: {name} has dtype {info['dtype']}, which is not supported")
    shapes = {name: torch.empty(info["shape"], device="meta") for name, info in infos.items()}
    check_tensors(shapes, config, where)


def read_hub(repo_id: str, layer: int, revision: str | None = None, dtype: torch.dtype | None = torch.bfloat16,
             progress: bool = True) -> BlockWeights:
    """Fetch one layer of a Hub repo: config, index and headers, then only the layer's byte ranges."""
    if constants.HF_HUB_OFFLINE:
        return _read_offline(repo_id, layer, revision, dtype)
    # config.json and the index come through hf_hub_download. huggingface_hub 2.4 checks the size of what
    # it receives against the size the Hub announced ("Consistency check failed") but does not hash a
    # plain HTTP download: these two small JSON files are as sound as the TLS link to the Hub, and the
    # config is then checked against the tensors' shapes. A HEAD that times out is retried by
    # huggingface_hub itself with a longer timeout of its own (60 s) before it gives up.
    etag_timeout = constants.HF_HUB_ETAG_TIMEOUT
    try:
        config_path = Path(hf_hub_download(repo_id, "config.json", revision=revision, etag_timeout=etag_timeout))
        commit = config_path.parent.name  # snapshots/<commit>/config.json
        hf_config = json.loads(config_path.read_text())
        config, num_layers = config_from_hf(hf_config)
        index = resolve_layer(layer, num_layers)
        try:
            index_path = hf_hub_download(repo_id, "model.safetensors.index.json", revision=commit,
                                         etag_timeout=etag_timeout)
            weight_map = json.loads(Path(index_path).read_text())["weight_map"]
            prefix = hf_layer_prefix(weight_map, index)
            files = sorted({f for name, f in weight_map.items() if name.startswith(prefix)})
        except EntryNotFoundError:
            files, prefix = ["model.safetensors"], None

        headers = build_hf_headers()
        plans, layer_infos, total = [], {}, 0
        for filename in files:
            url = hf_hub_url(repo_id, filename, revision=commit)
            data_start, header = read_safetensors_header(url, headers)
            prefix = prefix or hf_layer_prefix(header, index)
            spans = [(data_start + info["data_offsets"][0], data_start + info["data_offsets"][1], name)
                     for name, info in header.items() if name.startswith(prefix)]
            plans.append((url, header, spans))
            layer_infos.update({name[len(prefix):]: header[name] for _, _, name in spans})
            total += sum(end - start for start, end, _ in spans)
        _check_layer_header(layer_infos, config, f"{repo_id}@{commit} layer {index}")

        # One request per tensor: each buffer is converted and dropped before the next arrives, so peak
        # memory stays near one layer in the target dtype.
        tensors: dict[str, torch.Tensor] = {}
        file_digest = hashlib.sha256(config_path.read_bytes())
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"{repo_id} layer {index}", disable=not progress) as bar:
            for url, header, spans in plans:
                file_digest.update(json.dumps(header, sort_keys=True).encode())
                for start, end, name in spans:
                    info = header[name]
                    raw, _ = _get_range(url, start, end, headers, bar)
                    t = torch.frombuffer(raw, dtype=SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
                    tensors[name[len(prefix):]] = t.to(dtype) if dtype is not None and t.dtype != dtype else t
    except (HfHubHTTPError, LocalEntryNotFoundError) as e:
        raise _explain(e, repo_id, revision) from e
    except TimeoutException as e:  # from hf_hub_download, after its own retries
        raise HubAccessError(f"{repo_id}: {constants.ENDPOINT} stopped answering (timeouts: HF_HUB_ETAG_TIMEOUT="
                             f"{etag_timeout} s, HF_HUB_DOWNLOAD_TIMEOUT={constants.HF_HUB_DOWNLOAD_TIMEOUT} s; "
                             f"{_one_line(e)}); nothing was cached, run the command again") from e
    except (HTTPError, OSError) as e:  # a dropped connection or a short file in hf_hub_download
        raise HubAccessError(f"{repo_id}: download from {constants.ENDPOINT} failed ({_one_line(e)}); "
                             "nothing was cached, run the command again") from e
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
