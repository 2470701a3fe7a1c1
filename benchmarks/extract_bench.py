"""Extraction benchmark: one LLaMA-7B-sized layer over loopback, ranged vs naive, in one run.

    python benchmarks/extract_bench.py

Writes a local multi-shard checkpoint with LLaMA-7B-sized layers (hidden 4096, SwiGLU 11008,
32 heads; random fp16 weights: the sizes are what matter), serves it with the Hub stand-in on
127.0.0.1, and extracts one layer that straddles two shards in three fresh processes:
``baseline`` (imports only: the interpreter's resident memory), ``ranged`` (this project:
headers + the layer's byte ranges) and ``naive`` (download the whole shards, load them, keep
one layer). Records bytes sent by the server, wall time and peak RSS of each process in
``results/extract/extract_bench.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


REPO = "bench-org/llama-7b-sized"
LAYER = 1


def write_checkpoint(folder: Path, num_layers: int = 3, shard_bytes: int = 650 * 2**20) -> None:
    """config.json + fp16 shards (greedy, like transformers' max_shard_size) + index."""
    import torch
    from safetensors.torch import save_file

    from timm_rllm.llm.families import expected_shapes
    from timm_rllm.llm.presets import get_preset

    if (folder / "model.safetensors.index.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    cfg = get_preset("llama").config
    config = {"model_type": "llama", "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
              "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
              "num_hidden_layers": num_layers, "rms_norm_eps": 1e-6, "vocab_size": 8000, "torch_dtype": "float16"}
    (folder / "config.json").write_text(json.dumps(config))
    gen = torch.Generator().manual_seed(0)
    names = {"model.embed_tokens.weight": (8000, cfg.hidden_size)}
    for i in range(num_layers):
        names.update({f"model.layers.{i}.{k}": s for k, s in expected_shapes(cfg).items()})
    shards, current, size = [], {}, 0
    for name, shape in names.items():
        t = (torch.randn(shape, generator=gen) * 0.02).half()
        if current and size + t.numel() * 2 > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += t.numel() * 2
    shards.append(current)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, folder / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def child(method: str, cache_dir: str) -> dict:
    """Runs in a fresh process (HF_ENDPOINT set by the parent); reports time and peak RSS."""
    import torch  # noqa: F401  (the same imports in every method, so the baseline is comparable)
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    from timm_rllm.llm import get_block_weights

    t0 = time.perf_counter()
    if method == "ranged":
        weights = get_block_weights(REPO, LAYER, cache_dir=cache_dir)
        layer_bytes = sum(t.numel() * t.element_size() for t in weights.tensors.values())
    elif method == "naive":
        import torch

        from timm_rllm.llm.cache import BlockCache
        from timm_rllm.llm.families import config_from_hf
        from timm_rllm.llm.sources import BlockWeights

        config_path = hf_hub_download(REPO, "config.json")
        config, num_layers = config_from_hf(json.loads(Path(config_path).read_text()))
        index = json.loads(Path(hf_hub_download(REPO, "model.safetensors.index.json")).read_text())["weight_map"]
        prefix = f"model.layers.{LAYER}."
        tensors = {}
        for fname in sorted({f for n, f in index.items() if n.startswith(prefix)}):
            shard = load_file(hf_hub_download(REPO, fname))  # the whole shard, downloaded and loaded
            tensors.update({n[len(prefix):]: t.to(torch.bfloat16) for n, t in shard.items()
                            if n.startswith(prefix)})
            del shard
        BlockCache(cache_dir).save(BlockWeights(tensors, config, REPO, LAYER, num_layers))
        layer_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    else:
        layer_bytes = 0
    wall = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: the latter carries the parent's peak across fork+exec
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return {"method": method, "wall_s": wall, "peak_rss_bytes": peak, "layer_bytes_bf16": layer_bytes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "timm_rllm_extract_bench"))
    p.add_argument("--out", default=str(ROOT / "results" / "extract"))
    p.add_argument("--child", choices=["baseline", "ranged", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.cache_dir)))
        return

    from timm_rllm.llm.families import HF_LAYER_PREFIX
    from timm_rllm.testing import FakeHub
    from timm_rllm.train.engine import environment

    work = Path(args.work)
    folder = work / "checkpoint"
    write_checkpoint(folder)
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    prefix = HF_LAYER_PREFIX.format(layer=LAYER)
    files = sorted({f for n, f in weight_map.items() if n.startswith(prefix)})
    layer_bytes_source = 0
    for f in files:
        raw = open(folder / f, "rb").read(8)
        n = int.from_bytes(raw, "little")
        with open(folder / f, "rb") as fh:
            header = json.loads(fh.read(8 + n)[8:])
        spans = [v["data_offsets"] for k, v in header.items() if k.startswith(prefix)]
        layer_bytes_source += sum(end - start for start, end in spans)

    rows = []
    with FakeHub() as hub:
        hub.add_repo(REPO, folder)
        for method in ("baseline", "ranged", "naive"):
            hub.sent.clear()
            run_dir = Path(tempfile.mkdtemp(dir=work))
            env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(run_dir / "hf")}
            cmd = [sys.executable, __file__, "--child", method, "--cache-dir", str(run_dir / "blocks")]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["bytes_sent"] = sum(hub.sent.values())
            row["shard_bytes_sent"] = sum(v for k, v in hub.sent.items() if k.endswith(".safetensors"))
            rows.append(row)
            print(row, flush=True)
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)

    base_rss = rows[0]["peak_rss_bytes"]
    for r in rows:
        r["rss_over_baseline_bytes"] = r["peak_rss_bytes"] - base_rss
        r["bytes_over_layer"] = r["shard_bytes_sent"] / layer_bytes_source
        r["rss_over_baseline_per_layer"] = r["rss_over_baseline_bytes"] / layer_bytes_source
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "environment": environment(),
        "checkpoint": {"layers": 3, "hidden": 4096, "intermediate": 11008, "dtype": "float16",
                       "shards": len(set(weight_map.values())),
                       "layer": LAYER, "layer_shards": files, "layer_bytes_fp16": layer_bytes_source,
                       "weights": "random (sizes are what matter)"},
        "runs": rows,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "extract_bench.json").write_text(json.dumps(result, indent=1, default=str))
    mib = 2**20
    lines = ["# Extraction of one LLaMA-7B-sized layer over loopback", "",
             f"Layer {LAYER} of a 3-layer fp16 checkpoint in {result['checkpoint']['shards']} shards; the layer spans "
             f"{len(files)} shards and holds {layer_bytes_source / mib:.1f} MiB (fp16), stored as bf16. "
             f"Hardware: {result['environment']['processor']}, {result['environment']['cpu_count']} CPUs.", "",
             "Wall time counts the work after imports; peak RSS is the process's VmHWM; the baseline process only "
             "imports the same modules.", "",
             "| method | bytes sent (MiB) | shard bytes / layer bytes | wall (s) | peak RSS (MiB) | "
             "RSS over baseline (MiB) | over baseline / layer |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['bytes_sent'] / mib:.1f} | {r['bytes_over_layer']:.3f} | "
                     f"{r['wall_s']:.2f} | "
                     f"{r['peak_rss_bytes'] / mib:.0f} | {r['rss_over_baseline_bytes'] / mib:.0f} | "
                     f"{r['rss_over_baseline_per_layer']:.2f} |")
    (out_dir / "extract_bench.md").write_text("\n".join(lines) + "\n")
    from _report import update_results

    update_results("extract", "\n".join(lines[2:]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
