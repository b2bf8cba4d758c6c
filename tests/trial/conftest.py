"""Fixtures for the training container's tests: a tiny BERT built offline, small local data, trial processes.

Nothing here touches a model hub: the tiny model is a ``BertConfig`` with a WordPiece vocabulary written
to a temporary directory, wrapped as a SentenceTransformer with mean pooling; the data are JSON lines
written from a seeded generator. Trial processes run ``python -m hpo_trial`` with the trial contract in
their environment, exactly as the operator's pods do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.trial.helpers import (
    OFFLINE_ENV,
    THREADS,
    VOCABULARY,
    RunTrial,
    TinyData,
    TrialRun,
    make_pairs,
    make_triplets,
    run_hpo_trial,
    write_jsonl,
)

os.environ.update(OFFLINE_ENV)


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    d = tmp_path_factory.mktemp("tiny-data")
    return TinyData(
        dir=d,
        pairs_train=write_jsonl(d / "pairs-train.jsonl", make_pairs(64, seed=1)),
        pairs_dev=write_jsonl(d / "pairs-dev.jsonl", make_pairs(40, seed=2)),
        triplets_train=write_jsonl(d / "triplets-train.jsonl", make_triplets(48, seed=3)),
        triplets_dev=write_jsonl(d / "triplets-dev.jsonl", make_triplets(24, seed=4)),
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-wide BERT with a WordPiece vocabulary of the test words, as a SentenceTransformer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny-bert")
    hf_dir, st_dir = root / "hf", root / "st"
    hf_dir.mkdir()
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *letters,
        *[f"##{c}" for c in letters],
        *VOCABULARY,
    ]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(hf_dir)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(hf_dir)
    model = SentenceTransformer(str(hf_dir), device="cpu")  # a plain BERT gets mean pooling
    assert "[UNK]" not in model.tokenizer.tokenize("the cat near the harbor"), "the vocabulary is not in use"
    model.save(str(st_dir))
    return str(st_dir)


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cache directory for the datasets library, shared by the tests' trial processes."""
    return str(tmp_path_factory.mktemp("hf-home"))


@pytest.fixture
def run_trial_process(hf_home: str, tmp_path: Path) -> Iterator[RunTrial]:
    """Run ``python -m hpo_trial`` with a trial contract in its environment; returns code and output."""

    def run(
        *,
        storage_url: str,
        study_name: str,
        trial_number: int,
        params: Mapping[str, Any],
        trainer: Mapping[str, Any],
        objective: str,
        direction: str = "maximize",
        pruner: Mapping[str, Any] | None = None,
        output_dir: str | None = None,
        timeout: float = 300,
    ) -> TrialRun:
        from hpo_trial.contract import Objective, TrialContract

        contract = TrialContract(
            storage_url=storage_url,
            study_name=study_name,
            trial_number=trial_number,
            params=dict(params),
            objectives=(Objective(objective, direction),),
            pruner=dict(pruner or {"type": "None"}),
            trainer=dict(trainer),
            output_dir=output_dir or str(tmp_path / "out"),
        )
        env = {
            **os.environ,
            **OFFLINE_ENV,
            **contract.to_env(),
            "HF_HOME": hf_home,
            "OMP_NUM_THREADS": str(THREADS),
            "MKL_NUM_THREADS": str(THREADS),
            "PYTHONUNBUFFERED": "1",
        }
        done = run_hpo_trial(env, tmp_path, timeout)
        output = done.stdout + done.stderr
        print(output[-6000:])  # shown by pytest when a test fails
        return TrialRun(done.returncode, output)

    yield run
