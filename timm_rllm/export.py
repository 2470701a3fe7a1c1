"""Hub-ready folders in timm's format, model cards built from results files, and push.

A folder holds ``config.json`` (architecture, num_classes, pretrained_cfg, model_args: what
``timm.create_model("hf-hub:...")`` and ``"local-dir:..."`` read), ``model.safetensors`` and a
``README.md`` model card. The frozen LLM tensors are left out by default: ``model_args`` records
the block's source, layer and digest, and loading re-attaches the block from the block cache
(extracting it when needed) and refuses one whose digest differs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from timm.models._hub import save_config_for_hf

from ._io import atomic_folder, save_file
from .models._booster import block_tensors
from .models.vision_transformer_rllm import without_aux_branch

LLM_BASE_MODELS = {  # the original model each embedded/preset block approximates
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gemma3": "google/gemma-3-270m",
    "llama": "huggyllama/llama-7b",
}
BLOCK_FIELDS = ("llm", "source", "revision", "layer", "num_layers", "digest", "license", "residual")
HF_LICENSES = {"apache-2.0": "apache-2.0"}  # anything else is `other` with a license_name
DATASET_IDS = {"medmnist": "albertvillanova/medmnist-v2"}


def export_model(model: torch.nn.Module, out_dir: str | os.PathLike, results: dict[str, Any] | None = None,
                 include_llm: bool = False, tag: str | None = None, weights: bool = True,
                 sweep: dict[str, Any] | None = None) -> Path:
    """Write config.json, model.safetensors (unless ``weights=False``: a card-only folder) and, with
    ``results``, README.md into ``out_dir`` (with ``sweep``, see `model_card`, the card also gives the
    variant's numbers over seeds). The folder is built aside and swapped in whole: an interrupted export leaves
    the previous one intact, never new weights beside an old card."""
    info = getattr(model, "llm_info", {}) or {}
    if getattr(model, "aux_weight", None) is not None:  # train with the block, deploy without: the plain backbone
        model, info = without_aux_branch(model), {"trained_with": info}
    if info.get("random_weights"):
        raise ValueError("this model runs a RANDOM LLM block (an ablation control); it is not exported as a checkpoint")
    if results is not None and not results.get("test"):
        raise ValueError("this run never scored its test split (--no-score-test, a recipe-search run): a model card "
                         "needs the test numbers; export a run trained with test scoring")
    check_export_target(Path(out_dir))
    with atomic_folder(out_dir) as tmp:
        _write_export(model, tmp, info, results, include_llm, tag, weights, sweep)
    return Path(out_dir)


def check_export_target(out: Path) -> None:
    """An export replaces its folder whole: only an empty folder or an earlier export may be there."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} is a file: give the folder to export into")
    previous = out / "config.json"
    try:
        is_export = "rllm" in json.loads(previous.read_text())
    except (OSError, ValueError):
        is_export = False
    if any(out.iterdir()) and not is_export:
        raise ValueError(f"{out} is not empty and holds no earlier export: exporting there would replace it whole; "
                         "give a new or empty folder")


def _write_export(model: torch.nn.Module, out: Path, info: dict[str, Any], results: dict[str, Any] | None,
                  include_llm: bool, tag: str | None, weights: bool, sweep: dict[str, Any] | None = None) -> None:
    state = model.state_dict()  # without the frozen LLM block: it is re-attached from the block cache
    include_llm = include_llm and bool(block_tensors(model))  # a model without a block has none to include
    if include_llm:
        state.update(block_tensors(model))
    if weights:
        save_file(state, out / "model.safetensors", {"format": "pt"})

    model_args = {k: v for k, v in getattr(model, "_model_args", {}).items() if k != "llm_cache_dir"}
    if info.get("llm"):
        model_args.update(llm_source=info["source"], llm_layer=info["layer"], llm_digest=info["digest"])
    save_config_for_hf(model, str(out / "config.json"), model_args=model_args)
    config = json.loads((out / "config.json").read_text())
    config["model_args"].pop("llm_cache_dir", None)
    config["rllm"] = {**{k: info.get(k) for k in BLOCK_FIELDS}, "llm_tensors_included": include_llm}
    if trained_with := info.get("trained_with"):  # the block shaped the training but is not in the model
        config["rllm"]["trained_with"] = {k: trained_with.get(k) for k in (*BLOCK_FIELDS, "aux_weight")}
        config["rllm"]["params"] = sum(p.numel() for p in model.parameters())
    if tag:
        config["pretrained_cfg"]["tag"] = tag
    (out / "config.json").write_text(json.dumps(config, indent=4))
    if results is not None:
        (out / "README.md").write_text(model_card(config, results, sweep=sweep))


def block_line(rl: dict[str, Any]) -> str:
    return (f"{rl['llm']}: `{rl['source']}` layer {rl['layer']} of {rl['num_layers']} "
            f"({rl.get('revision') or 'no revision'}), digest `{str(rl.get('digest'))[:16]}`")


def is_timm_model(name: str) -> bool:
    """Whether timm itself provides the architecture (loads without this plugin)."""
    import timm

    return timm.is_model(name) and timm.models.model_entrypoint(name).__module__.startswith("timm.")


def _pct(value: float | None) -> str:
    return f"{100 * value:.2f}" if value is not None else "n/a"


def medmnist_tag(dataset: str, size: int) -> str:
    """The pretrained tag of a MedMNIST fine-tune, e.g. ``medmnist_breast_28``, ``medmnist_adrenal3d_64``."""
    return f"medmnist_{dataset.replace('mnist', '')}_{size}"


def _yaml_list(items: list[str]) -> str:
    return "\n".join(f"- {json.dumps(i)}" for i in items)


def sweep_section(sweep: dict[str, Any]) -> str:
    """The card's "Across seeds" section: the variant against the plain model of the same sweep, from that sweep's
    summary.json. ``sweep``: ``{"name", "variant", "summary": summary[dataset][variant], "plain":
    summary[dataset]["plain"] or None, "source": the summary's path}``; the summary's ``paired_vs`` (the variant
    against the sweep's controls) is listed too."""
    summ, plain = sweep["summary"], sweep.get("plain")
    rows = [(f"this variant (`{sweep['variant']}`, {sweep['name']})", summ)]
    if plain:
        rows.append(("plain model (same backbone, no block), same recipe and seeds", plain))
    table = "\n".join(f"| {label} | {len(v['seeds'])} | {v['test_acc_mean']:.2f} ± {v['test_acc_std']:.2f} | "
                      f"{v['test_bacc_mean']:.2f} | {v['test_auc_mean']:.2f} ± {v['test_auc_std']:.2f} | "
                      f"{v['collapsed']} |" for label, v in rows)
    paired = summ.get("paired_vs_plain") or {}
    lines = [f"- minus the plain model, test {metric.upper()}: {d['delta']:+.2f} points, {d['reading']}"
             for metric, d in sorted(paired.items(), key=lambda kv: kv[0] != "auc")]
    if not lines:
        lines = ["- no plain model shares its seeds in this sweep: no paired comparison"]
    # against the sweep's controls (`random`: the same block, random weights; `mlp`: no block): is it the LLM?
    lines += [f"- minus `{other}`, test AUC: {d['auc']['delta']:+.2f} points, {d['auc']['reading']}"
              for other, d in (summ.get("paired_vs") or {}).items() if "auc" in d]
    verdict = "\n".join(lines)
    return f"""
## Across seeds (the sweep this checkpoint comes from)

| model | seeds | test ACC | test balanced ACC | test AUC | collapsed |
|---|---|---|---|---|---|
{table}

{verdict}

Mean ± std over seeds, in percent; differences are paired by seed with a 95% confidence interval
(`{sweep['source']}`). This checkpoint is the seed with the best validation AUC; its own test numbers
above are one draw from this spread.
"""


def model_card(config: dict[str, Any], results: dict[str, Any], repo_id: str | None = None,
               sweep: dict[str, Any] | None = None) -> str:
    """A model card (YAML front matter + markdown) from an exported config and one results file; with ``sweep``
    (see `sweep_section`), also the variant's numbers over the sweep's seeds and its paired difference to plain."""
    rl = config.get("rllm", {})
    trained_with = rl.get("trained_with") or {}  # residual="aux": the block trained the model, is not in it
    cfg = results["config"]
    arch = config["architecture"]
    llm_license = rl.get("license") or trained_with.get("license") or "apache-2.0"
    license_line = (f"license: {HF_LICENSES[llm_license]}" if llm_license in HF_LICENSES
                    else f"license: other\nlicense_name: {json.dumps(llm_license)}")
    base_model = LLM_BASE_MODELS.get(rl.get("llm") or "")
    dataset = cfg["dataset"]
    test, val = results["test"], results["val"]
    name = repo_id or f"{arch}.{config.get('pretrained_cfg', {}).get('tag') or medmnist_tag(dataset, cfg['size'])}"
    env = results["environment"]
    unit = "voxels" if dataset.endswith("3d") else "px"
    size, img_size = (f"{cfg[k]}{'³' if unit == 'voxels' else ''} {unit}" for k in ("size", "img_size"))
    front = f"""---
library_name: timm
{license_line}
tags:
{_yaml_list(["image-classification", "timm", "medical-imaging", "medmnist", "r-llm"])}
datasets:
{_yaml_list([DATASET_IDS["medmnist"]])}
{f"base_model: {base_model}" if base_model else ""}
model-index:
- name: {json.dumps(name)}
  results:
  - task:
      type: image-classification
    dataset:
      name: {json.dumps(f"MedMNIST {dataset} ({size})")}
      type: {json.dumps(DATASET_IDS["medmnist"])}
      split: test
    metrics:
    - type: accuracy
      value: {test["acc"]:.4f}
    - type: roc_auc
      value: {test["auc"]:.4f}
---
""".replace("\n\n", "\n")
    llm_line = "none (plain backbone)" if not rl.get("llm") else block_line(rl)
    if trained_with:
        llm_line = (f"none at inference: trained with an auxiliary branch (loss weight "
                    f"{trained_with.get('aux_weight')}) through {block_line(trained_with)}, dropped from this model")
    seed = cfg["seed"]
    val_row = (f"| validation (selected epoch {results['selected_epoch']}) | {100 * val['acc']:.2f} | "
               f"{_pct(val.get('bacc'))} | {100 * val['auc']:.2f} |")
    test_row = f"| test (scored once) | {100 * test['acc']:.2f} | {_pct(test.get('bacc'))} | {100 * test['auc']:.2f} |"
    block_params = (f", plus the frozen LLM block's {results['llm_block_params'] / 1e6:.2f} M"
                    if results.get("llm_block_params") else "")
    params_line = f"{results['params_trainable'] / 1e6:.2f} M trainable{block_params}"
    tensors_line = "yes" if rl.get("llm_tensors_included") else "no: re-attached from the block cache"
    tuned = config["model_args"].get("llm_trainable")  # the fine-tuned block is a parameter, in the state_dict
    if tuned:
        tensors_line = "yes: the fine-tuned block is in model.safetensors (the cached block only builds it)"
    if trained_with:
        params_line = (f"{rl['params'] / 1e6:.2f} M (trained as {results['params_trainable'] / 1e6:.2f} M with the "
                       f"auxiliary branch{block_params})")
        tensors_line = "no: the block is not used at inference"
    flags = ("\n**Collapsed**: the selected model gives every test image the same class; read ACC as the "
             "majority-class rate.\n" if results.get("collapsed") else "")
    from .train.engine import describe_hardware
    from .train.report import constant_train_loss, did_not_fit  # here: the report module pulls in scipy

    if did_not_fit(results):  # the selected epoch can predate it; say so, the sweep table counts these runs
        flags += (f"\n**Did not fit**: this run ended training at the loss of an input-blind prediction "
                  f"({results['history'][-1]['train_loss']:.3f}; the best constant prediction scores "
                  f"{constant_train_loss(results):.3f}); the published weights are its validation-selected "
                  f"epoch {results['selected_epoch']}.\n")
    command = portable_command(results["command"])
    method = ("(trained with an auxiliary branch through a frozen LLM decoder layer, as Bai et al., AAAI 2025, "
              "propose; the branch is not part of this model)" if trained_with else
              "(R-LLM with its LLM decoder layer fine-tuned, the paper's \"R-LLM fine-tuned\"; Lai et al., arXiv "
              "2403.17343)" if tuned else
              "(R-LLM: a frozen LLM decoder layer as a residual booster inside the ViT; Lai et al., arXiv 2403.17343)")
    usage_import = ("import timm_rllm  # registers the architectures; re-attaches the LLM block from its cache\n"
                    if rl.get("llm") or not is_timm_model(arch) else "")
    body = f"""
# {name}

A timm `{arch}` fine-tuned on MedMNIST **{dataset}** ({size}) with timm-rllm
{method}.

## Model details

| | |
|---|---|
| architecture | `{arch}` |
| parameters | {params_line} |
| input | {img_size}, {config['model_args'].get('in_chans', '?')} channel(s), patch {cfg['patch_size']} |
| LLM block | {llm_line} |
| LLM licence | {llm_license} |
| LLM tensors in this repo | {tensors_line} |

## Results (from the results file, not by hand)

| split | ACC | balanced ACC | AUC |
|---|---|---|---|
{val_row}
{test_row}
{flags}
Protocol: the epoch is chosen on the validation split, the test split is scored once with it; ACC
and AUC as `medmnist.Evaluator` computes them. One seed ({seed}); the sweep in `benchmarks/`
reports mean and spread over seeds. Trained on {describe_hardware(env)}, torch {env['torch']}, timm {env['timm']}.
{sweep_section(sweep) if sweep else ""}
## Usage

```python
import timm
{usage_import}
model = timm.create_model("hf-hub:{repo_id or 'ORG/' + name}", pretrained=True).eval()
```

## Reproduce

```bash
{command}
```
{DATA_DIR_NOTE if "$MEDMNIST_DIR" in command else ""}
## Limitations

- MedMNIST {"volumes" if unit == "voxels" else "images"} are small ({size} here); this is a research benchmark
  model, not a clinical tool.
- {"The SmolLM2 / Gemma 3 blocks are dequantised from 4-bit GGUF files: they approximate the "
   "original weights." if rl.get("llm") in ("smollm2", "gemma3") else "The LLM block is used as published."}
- The LLM block keeps its own licence ({llm_license}).
"""
    return front + body


DATA_DIR_NOTE = ("\n`$MEDMNIST_DIR`: a folder for the MedMNIST `.npz` files; a missing one is downloaded there from "
                 "Zenodo (through the `medmnist` package) on first use.\n")


def portable_command(command: str) -> str:
    """A recorded command without the recording machine's paths: the interpreter's or entry point's folder and a
    ``--data-dir`` outside the repository (``$MEDMNIST_DIR`` instead) are dropped, so a card reads the same
    anywhere. The rest is kept verbatim (older records joined the words without quoting, so nothing is
    re-quoted here)."""
    first, _, rest = command.partition(" ")
    if os.path.isabs(first) or ("/" in first and not first.endswith(".py")):  # .venv/bin/timm-rllm: an entry point
        command = f"{os.path.basename(first)} {rest}".rstrip()
    if first.endswith(".py"):  # sys.argv of a script holds no interpreter
        command = f"python {command}"

    def data_dir(m: re.Match) -> str:
        path = m.group(2)
        return m.group(0) if not (os.path.isabs(path) or path.split("/", 1)[0] == "..") else \
            f"--data-dir{m.group(1)}$MEDMNIST_DIR"

    return re.sub(r"--data-dir(=|\s+)(\S+)", data_dir, command)


def push(folder: str | os.PathLike, repo_id: str, private: bool = False, include_llm: bool = False,
         token: str | None = None) -> str:
    """Create the repo (if needed) and upload an exported folder; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("rllm", {}).get("llm_tensors_included") and not include_llm:
        raise ValueError(f"{folder} holds the LLM tensors (exported with --include-llm); pass include_llm=True / "
                         "--include-llm to upload them, respecting the LLM's licence")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=[".*", "*.partial"],
                             commit_message=f"Upload {config['architecture']} (timm-rllm)")
    return str(info)
