"""Class imbalance: class-weighted losses and a balanced sampler, from the train split's labels.

``TrainConfig.balance``:
- ``none``: the loss and the shuffling as before;
- ``weighted-loss``: multi-class, binary and ordinal tasks weight the cross-entropy by inverse class
  frequency (normalised to mean 1 over the classes that occur); multi-label tasks weight each label's
  positive term by neg/pos (BCE ``pos_weight``);
- ``sampler``: a ``WeightedRandomSampler`` draws len(train) images per epoch with replacement, each with
  probability proportional to the inverse frequency of its class. A multi-label image counts with the mean
  inverse frequency of its positive labels; images with no positive label form one more group of their own.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import WeightedRandomSampler

from ..data import MULTI_LABEL

BALANCE_MODES = ("none", "weighted-loss", "sampler")


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse class frequency of (N,) or (N, 1) labels, mean 1 over the classes present; absent classes get 0
    (they never are a target, and 0 keeps them from inflating the label-smoothing term)."""
    counts = np.bincount(np.asarray(labels).reshape(-1).astype(np.int64), minlength=num_classes).astype(np.float64)
    inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return torch.tensor(inv / inv[counts > 0].mean(), dtype=torch.float32)


def pos_weights(labels: np.ndarray) -> torch.Tensor:
    """neg/pos per label of (N, L) 0/1 labels; 1 where a label is all positive or all negative (no ratio)."""
    y = np.asarray(labels, dtype=np.float64)
    pos, neg = y.sum(0), (1 - y).sum(0)
    ratio = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(ratio, dtype=torch.float32)


def sample_weights(labels: np.ndarray, task: str, num_classes: int) -> torch.Tensor:
    """One weight per train image for the balanced sampler (see the module docstring)."""
    y = np.asarray(labels)
    if task != MULTI_LABEL:
        return class_weights(y, num_classes)[torch.from_numpy(y.reshape(-1).astype(np.int64))]
    y = y.astype(np.float64)
    pos = y.sum(0)
    inv = np.where(pos > 0, 1.0 / np.maximum(pos, 1), 0.0)
    n_pos = y.sum(1)
    none = n_pos == 0
    w = (y @ inv) / np.maximum(n_pos, 1)
    w[none] = 1.0 / none.sum() if none.any() else 0.0
    return torch.tensor(w / w.mean(), dtype=torch.float64)


def balanced_sampler(labels: np.ndarray, task: str, num_classes: int,
                     generator: torch.Generator) -> WeightedRandomSampler:
    """len(labels) draws with replacement per epoch, from the run's seeded generator (so resume replays it)."""
    return WeightedRandomSampler(sample_weights(labels, task, num_classes), num_samples=len(labels),
                                 replacement=True, generator=generator)


def build_criterion(balance: str, task: str, labels: np.ndarray, num_classes: int, label_smoothing: float,
                    mixup: bool, device: torch.device | str = "cpu") -> nn.Module:
    """The training loss. Unweighted runs keep timm's losses (results of earlier runs stay reproducible).

    With ``weighted-loss`` and Mixup/CutMix (soft targets that already carry the smoothing), the loss per
    image is -sum_c w_c t_c log p_c, averaged over the batch (torch's CrossEntropyLoss with probability
    targets); with hard targets it is torch's weighted cross-entropy with label smoothing, whose mean
    divides by the summed weights of the batch's targets."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    weighted = balance == "weighted-loss"
    if task == MULTI_LABEL:
        return nn.BCEWithLogitsLoss(pos_weight=pos_weights(labels).to(device) if weighted else None)
    if weighted:
        w = class_weights(labels, num_classes).to(device)
        return nn.CrossEntropyLoss(weight=w) if mixup else nn.CrossEntropyLoss(weight=w,
                                                                               label_smoothing=label_smoothing)
    if mixup:
        return SoftTargetCrossEntropy()
    if label_smoothing > 0:
        return LabelSmoothingCrossEntropy(label_smoothing)
    return torch.nn.CrossEntropyLoss()


def constant_loss(criterion: nn.Module, labels: np.ndarray, task: str, num_classes: int) -> float:
    """The lowest loss a model that ignores its input reaches on these labels under ``criterion`` (hard targets):
    the best constant logits, fitted by L-BFGS. A run whose train loss stays there learned nothing from the images
    (with class weights and label smoothing it is not log K: 0.722 on AdrenalMNIST3D, for instance). One mean over
    the split: the engine logs the mean of per-batch losses, which with class weights differs slightly (0.4% for
    AdrenalMNIST3D at batch 32; more for batches that often miss a rare class)."""
    y = np.asarray(labels)
    device = next((b.device for b in criterion.buffers()), torch.device("cpu"))
    if task == MULTI_LABEL:
        target = torch.as_tensor(y, dtype=torch.float32, device=device)
        logits = torch.zeros(y.shape[1], device=device, requires_grad=True)
    else:
        target = torch.as_tensor(y.reshape(-1).astype(np.int64), device=device)
        logits = torch.zeros(num_classes, device=device, requires_grad=True)
    optimizer = torch.optim.LBFGS([logits], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(logits.expand(len(target), -1), target)
        loss.backward()
        return loss

    with torch.enable_grad():  # callable under no_grad too
        optimizer.step(closure)
    with torch.no_grad():
        return float(criterion(logits.expand(len(target), -1), target))
