"""The one sweep runner: many `fit` runs of one shared recipe, over seeds, then one report.

Two plans share it (``timm-rllm sweep``):

- **variants** (``--variants plain,rllm,mlp,...``): for every dataset and seed, one run per variant of
  :data:`VARIANTS` (the plain model, R-LLM, the controls, the same-harness ResNet), in
  ``OUT/DATASET/VARIANT/seedN``;
- **layers** (``--layers -1,-2,middle,...``): which LLM, which layer: the plain ViT, then per LLM the ``mlp``
  control, a ``random`` block and one R-LLM run per layer, in ``OUT/LLM/layerN/seedN``.

Every run is an ordinary, resumable `fit` folder with its results.json; finished runs are skipped. The tables,
findings and charts are rendered from those files only (:mod:`timm_rllm.train.report`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from ..llm.presets import get_preset
from .engine import TrainConfig, fit

_logger = logging.getLogger(__name__)

# variant -> (timm model, extra model kwargs); {plain} is timm's ViT for 2D and our llm-free model for 3D;
# {resnet} is MedMNIST v2's ResNet-18 (28) or ResNet-18 + 3D, in this harness.
VARIANTS: dict[str, tuple[str, dict]] = {
    "plain": ("{plain}", {}),
    "mlp": ("{backbone}_{size}_rllm_{llm}", {"residual": "mlp"}),
    "linear": ("{backbone}_{size}_rllm_{llm}", {"residual": "linear"}),
    "rllm": ("{backbone}_{size}_rllm_{llm}", {"residual": "inner"}),
    "gemma3": ("{backbone}_{size}_rllm_gemma3", {"residual": "inner"}),
    "outer": ("{backbone}_{size}_rllm_{llm}", {"residual": "outer"}),
    "hybrid": ("{backbone}_{size}_rllm_{llm}", {"residual": "hybrid"}),
    "random": ("{backbone}_{size}_rllm_{llm}", {"residual": "inner", "llm_source": "random"}),
    # ViViT only: the booster before the temporal norm (the reference code runs it after, our default)
    "rllm_prenorm": ("{backbone}_{size}_rllm_{llm}", {"residual": "inner", "booster_after_norm": False}),
    # train with the block on a side branch, deploy the plain ViT (Bai et al., AAAI 2025); aux_weight untuned
    "aux": ("{backbone}_{size}_rllm_{llm}", {"residual": "aux", "aux_weight": 1.0}),
    # the paper's "R-LLM fine-tuned" row: the block unfrozen (gradients, optimizer state, saved in checkpoints)
    "tuned": ("{backbone}_{size}_rllm_{llm}", {"residual": "inner", "llm_trainable": True}),
    "resnet": ("{resnet}", {"drop_path_rate": 0.0}),  # MedMNIST's network has no stochastic depth
}
BACKBONES = ("vit", "vit3d", "vivit")


def resolve_layer_spec(spec: str, num_layers: int) -> int | list[int]:
    """``-1``, ``3``, ``first``, ``middle``, ``last``, or an inclusive stack ``-2..-1``."""
    named = {"first": 0, "middle": num_layers // 2, "last": num_layers - 1}
    if spec in named:
        return named[spec]
    try:
        ends = [int(x) for x in spec.split("..")]
    except ValueError:
        raise ValueError(f"unknown layer {spec!r}: use an index, first, middle, last, or a stack like -2..-1") from None
    if len(ends) > 2:
        raise ValueError(f"layer stack {spec!r}: give two ends, e.g. -2..-1")
    for index in ends:  # checked before wrapping: -40 of a 30-layer LLM is an error, not layer 20
        if not -num_layers <= index < num_layers:
            raise IndexError(f"layer {index} (in {spec!r}) is out of range for an LLM with {num_layers} layers "
                             f"(valid: 0..{num_layers - 1}, or -{num_layers}..-1 from the end)")
    first, last = (i % num_layers for i in (ends[0], ends[-1]))
    if len(ends) == 1:
        return first
    if last < first:
        raise ValueError(f"layer stack {spec!r} must go forward, e.g. -2..-1")
    return list(range(first, last + 1))


def variant_config(base: TrainConfig, variant: str, backbone: str = "vit", size: str = "tiny",
                   llm: str = "smollm2") -> TrainConfig:
    """``base`` with the model and model kwargs of one variant; every other field is the shared recipe."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    model, extra = VARIANTS[variant]
    plain = f"vit_{size}_patch16_224" if backbone == "vit" else f"{backbone}_{size}"
    resnet = "resnet18_medmnist" if backbone == "vit" else "resnet18_3d_medmnist"
    model = model.format(plain=plain, resnet=resnet, backbone=backbone, size=size, llm=llm)
    kwargs = {**base.model_kwargs, **extra}
    if base.amp == "none" and "_rllm_" in model:
        # without autocast a bf16-stored block runs in bf16, emulated (7x slower here) on CPUs without bf16
        kwargs = {"llm_dtype": "float32", **kwargs}
    return dataclasses.replace(base, model=model, model_kwargs=kwargs)


def folder(dataset: str, size: int) -> str:
    """A dataset's results folder: its flag, plus the size when it is not MedMNIST's 28 (e.g. adrenalmnist3d_64)."""
    return dataset if size == 28 else f"{dataset}_{size}"


def plan_variants(base: TrainConfig, datasets: list[str], variants: list[str], seeds: list[int],
                  backbone: str = "vit", size: str = "tiny", llm: str = "smollm2") -> list[tuple[str, TrainConfig]]:
    """(run folder, TrainConfig) for every dataset x seed x variant, in that order."""
    runs = []
    for dataset in datasets:
        for seed in seeds:
            for variant in variants:
                cfg = variant_config(dataclasses.replace(base, dataset=dataset, seed=seed), variant, backbone, size,
                                     llm)
                runs.append((f"{folder(dataset, cfg.size)}/{variant}/seed{seed}", cfg))
    return runs


def plan_layers(base: TrainConfig, llms: list[str], layers: list[str], seeds: list[int],
                size: str = "tiny") -> list[tuple[str, TrainConfig]]:
    """(run folder, TrainConfig) for every run of a layer sweep. Each run is the variant sweep's run of the same
    name (`variant_config`): the last layer's is exactly ``rllm`` (so a finished ``rllm`` run of the same recipe
    and seed is the same run), another layer's is ``rllm`` with ``llm_layer`` set."""
    runs = []
    for seed in seeds:
        seeded = dataclasses.replace(base, seed=seed)
        runs.append((f"plain/seed{seed}", variant_config(seeded, "plain", size=size)))
        for llm in llms:
            num_layers = get_preset(llm).num_layers
            runs.append((f"{llm}/mlp/seed{seed}", variant_config(seeded, "mlp", size=size, llm=llm)))
            runs.append((f"{llm}/random/seed{seed}", variant_config(seeded, "random", size=size, llm=llm)))
            rllm = variant_config(seeded, "rllm", size=size, llm=llm)
            for spec in layers:
                layer = resolve_layer_spec(spec, num_layers)
                name = "-".join(map(str, layer)) if isinstance(layer, list) else str(layer)
                cfg = rllm if layer == num_layers - 1 else dataclasses.replace(
                    rllm, model_kwargs={**rllm.model_kwargs, "llm_layer": layer})
                runs.append((f"{llm}/layer{name}/seed{seed}", cfg))
    return runs


# what may differ between the runs of one sweep: what a variant or a seed changes, and where a run reads and runs
PER_RUN = ("model", "model_kwargs", "seed", "data_dir", "workers", "device")


def check_one_recipe(runs: list[tuple[str, TrainConfig]], out: str | Path) -> None:
    """Refuse, before any run, a plan whose recipe differs from that of runs already finished in ``out`` on the
    same data: the report pairs them by seed, so a second recipe (e.g. ``--amp auto`` read as bf16 on another
    machine, fp32 before) would be compared as if it were a variant's effect."""
    recorded: dict[tuple, tuple[Path, dict]] = {}
    defaults = TrainConfig.defaults()
    for path in sorted(Path(out).rglob("results.json")):
        try:
            config = {**defaults, **json.loads(path.read_text())["config"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a run's results file; `fit` says what is wrong with a run's own
        recorded.setdefault((config["dataset"], config["size"], config["score_test"]), (path.parent, config))
    for name, cfg in runs:
        planned = cfg.to_dict()
        if (found := recorded.get((cfg.dataset, cfg.size, cfg.score_test))) is None:
            continue
        where, config = found
        if diff := [k for k in planned if k not in PER_RUN and planned[k] != config[k]]:
            raise ValueError(
                f"{name} would not share the recipe of {where} ("
                + ", ".join(f"{k}: {planned[k]!r} here, {config[k]!r} there" for k in diff)
                + "): runs of one sweep are paired by seed, so pass the recorded options (e.g. --amp "
                f"{config['amp']}) or use another --out")


def run_plan(runs: list[tuple[str, TrainConfig]], out: str | Path) -> None:
    """Fit every run into ``out/NAME`` (finished ones are skipped, an interrupted one resumes), after checking
    that they share the recipe of the runs already in ``out`` (`check_one_recipe`)."""
    check_one_recipe(runs, out)
    for name, cfg in runs:
        r = fit(cfg, Path(out) / name, resume=True, progress=False)
        scores = r["test"] or r["val"]  # with --no-score-test, the validation split's
        _logger.info(f"{name}: {'test' if r['test'] else 'val'} ACC {scores['acc']:.4f} AUC {scores['auc']:.4f} "
                     f"(epoch {r['selected_epoch']}{', COLLAPSED' if r.get('collapsed') else ''})")
