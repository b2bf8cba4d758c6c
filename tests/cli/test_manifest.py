"""Manifests are read the way kubectl and the API server read them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hpo_operator.cli.manifest import ManifestError, load_manifest

from tests.cli.conftest import REPO, RunHpo

MANIFEST = """\
apiVersion: hpo.dev/v1alpha1
kind: HPOStudy
metadata: {name: floats}
spec:
  objective: [{metric: score, direction: maximize}]
  searchSpace:
    - {name: learning_rate, type: float, low: 1e-6, high: 1e-4, log: true}
    - {name: warmup_ratio, type: float, low: .0, high: 3e-1}
  trials: {total: 2}
  template: {command: [python, objective.py]}
"""


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    # PyYAML's YAML 1.1 resolver reads `1e-6` as the string "1e-6"; kubectl (YAML 1.2) reads a number.
    path = tmp_path / "study.yaml"
    path.write_text(MANIFEST)
    manifest = load_manifest(path)
    params = {p.name: p for p in manifest.spec.search_space}
    assert params["learning_rate"].low == pytest.approx(1e-6)
    assert params["learning_rate"].high == pytest.approx(1e-4)
    assert params["warmup_ratio"].high == pytest.approx(0.3)


def test_a_quoted_exponent_stays_a_string_and_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(MANIFEST.replace("low: 1e-6", 'low: "1e-6"'))
    with pytest.raises(ManifestError, match=r"searchSpace\[0\]\.low"):
        load_manifest(path)


def _custom_example_with(tmp_path: Path, sampler_options: str) -> Path:
    """The shipped custom-container example, its sampler given ``options``."""
    text = (REPO / "examples" / "custom-container-study.yaml").read_text()
    assert "    type: TPE\n    seed: 1\n" in text
    text = text.replace(
        "    type: TPE\n    seed: 1\n", f"    type: TPE\n    seed: 1\n    options: {sampler_options}\n"
    )
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_hpo_validate_refuses_a_sampler_option_of_the_wrong_type(tmp_path: Path, run_hpo: RunHpo) -> None:
    # The reviewer's repro: this passed `hpo validate` and crash-looped the operator at its first ask.
    path = _custom_example_with(tmp_path, '{n_startup_trials: "x"}')
    result = run_hpo("validate", str(path), cwd=tmp_path)
    assert result.code != 0
    assert "spec.sampler.options.n_startup_trials: must be a whole number, got 'x'" in result.text
    assert "Traceback" not in result.text


def test_hpo_validate_refuses_a_sampler_option_optuna_refuses_only_when_sampling(
    tmp_path: Path, run_hpo: RunHpo
) -> None:
    path = _custom_example_with(tmp_path, "{n_ei_candidates: 0}")
    result = run_hpo("validate", str(path), cwd=tmp_path)
    assert result.code != 0 and "spec.sampler.options: the TPE sampler failed to sample" in result.text
    good = _custom_example_with(tmp_path, "{n_startup_trials: 4, multivariate: true}")
    result = run_hpo("validate", str(good), cwd=tmp_path)
    assert result.code == 0 and "valid HPOStudy" in result.out
    assert "A new study created" not in result.text  # the spec-time trial run is silent


def test_hpo_validate_refuses_recipe_mistakes_before_any_trial(tmp_path: Path, run_hpo: RunHpo) -> None:
    # The reviewer's three built-in-runner mistakes: each passed `hpo validate` and failed in a trial pod.
    seed = (REPO / "examples" / "seed-study.yaml").read_text()
    fp16 = "      fp16: true\n"
    cases = [
        (fp16, fp16 + "      num_train_epoch: 1\n", "spec.trainer.arguments.num_train_epoch"),
        (
            "    - name: learning_rate\n",
            "    - name: learning_rat\n",
            "spec.searchSpace[3].name: 'learning_rat'",
        ),
        (fp16, fp16 + '      num_train_epochs: "one"\n', "must be a number, got 'one'"),
    ]
    for old, new, words in cases:
        assert old in seed
        path = tmp_path / "study.yaml"
        path.write_text(seed.replace(old, new, 1))
        result = run_hpo("validate", str(path), cwd=tmp_path)
        assert result.code != 0 and words in result.text
        assert "HPO_TRIAL_PARAMS" not in result.text and "Traceback" not in result.text


def test_hpo_validate_checks_parameter_types_and_honours_check_arguments(
    tmp_path: Path, run_hpo: RunHpo
) -> None:
    import jsonschema
    import yaml

    seed = (REPO / "examples" / "seed-study.yaml").read_text()
    path = tmp_path / "study.yaml"
    batch = "    - name: per_device_train_batch_size\n      type: int\n"
    assert batch in seed
    # A float parameter for an integer argument used to pass and fail every trial on a GPU node.
    path.write_text(seed.replace(batch, batch.replace("type: int", "type: float"), 1))
    result = run_hpo("validate", str(path), cwd=tmp_path)
    assert result.code != 0 and "spec.searchSpace[1].type" in result.text, result.text
    assert "takes an integer" in result.text and "Traceback" not in result.text

    # A trial image with another library version: an optimizer the table does not know.
    fp16 = "      fp16: true\n"
    newer = seed.replace(fp16, fp16 + "      optim: adamw_new\n", 1)
    path.write_text(newer)
    result = run_hpo("validate", str(path), cwd=tmp_path)
    assert result.code != 0 and "spec.trainer.arguments.optim" in result.text, result.text
    unchecked = newer.replace("    arguments:\n", "    checkArguments: false\n    arguments:\n", 1)
    assert "checkArguments" in unchecked
    path.write_text(unchecked)
    result = run_hpo("validate", str(path), cwd=tmp_path)
    assert result.code == 0, result.text
    # The API server takes it too: spec.trainer is free-form in the CRD.
    crd = yaml.safe_load((REPO / "crds" / "hpo.dev_hpostudies.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    manifest = yaml.safe_load(unchecked)
    assert manifest["spec"]["trainer"]["checkArguments"] is False
    jsonschema.Draft4Validator(schema).validate(manifest)


def test_a_missing_local_file_is_refused_before_any_trial(tmp_path: Path, run_hpo: RunHpo) -> None:
    import shutil

    quickstart = (REPO / "examples" / "quickstart.yaml").read_text()
    shutil.copytree(REPO / "examples" / "data", tmp_path / "data")
    path = tmp_path / "study.yaml"
    assert "files: data/sts-dev.csv" in quickstart
    path.write_text(quickstart.replace("files: data/sts-dev.csv", "files: data/sts-devv.csv"))
    field = "spec.trainer.evaluator.dataset.files"
    said = f"{path}: {field}: no such file: data/sts-devv.csv in {tmp_path} (where hpo run starts trials)"
    result = run_hpo("validate", str(path), cwd=REPO)
    assert result.code == 2 and said in " ".join(result.err.split()), result.err
    assert "--no-file-check" in result.err
    # For a cluster whose trial image holds the file.
    assert run_hpo("validate", str(path), "--no-file-check", cwd=REPO).code == 0
    # hpo run says so before it stores or starts anything.
    run = run_hpo("run", str(path), cwd=REPO)
    assert run.code == 2 and said in " ".join(run.err.split()), run.text
    assert not (tmp_path / "study.hpo.db").exists() and not (tmp_path / ".hpo").exists()

    # A glob pattern is found when it matches; a list names the missing entry; a custom command's script.
    path.write_text(quickstart.replace("files: data/sts-dev.csv", "files: [data/sts-dev.csv, extra/*.csv]"))
    result = run_hpo("validate", str(path), cwd=REPO)
    assert result.code == 2 and f"{field}[1]: no such file: extra/*.csv" in " ".join(result.err.split())
    path.write_text(quickstart.replace("files: data/sts-dev.csv", "files: data/sts-*.csv"))
    assert run_hpo("validate", str(path), cwd=REPO).code == 0
    custom = yaml.safe_load(quickstart)
    custom["spec"].pop("trainer")
    custom["spec"]["template"] = {"command": ["python", "train.py"], "args": ["--fast"]}
    path.write_text(yaml.safe_dump(custom))
    result = run_hpo("validate", str(path), cwd=REPO)
    assert result.code == 2 and "spec.template.command[1]: no such file: train.py" in result.err
    (tmp_path / "train.py").write_text("")
    assert run_hpo("validate", str(path), cwd=REPO).code == 0


def test_the_summary_counts_in_words(tmp_path: Path, run_hpo: RunHpo) -> None:
    seed = yaml.safe_load((REPO / "examples" / "seed-study.yaml").read_text())
    seed["spec"]["searchSpace"] = seed["spec"]["searchSpace"][:1]
    seed["spec"]["trials"] = {"total": 1, "parallelism": 1, "retries": 2, "maxFailed": 0}
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(seed))
    result = run_hpo("validate", str(path), cwd=tmp_path)
    assert result.code == 0, result.text
    lines = result.out.splitlines()
    assert "  parameters  1: num_train_epochs" in lines
    assert "  trials      1, 1 at a time" in lines
    assert "  on failure  2 retries a trial; the study fails after 1 failed trial" in lines
