"""Bad manifests, as a new user writes them, through both doors: the real API server (with the operator
behind it) and ``hpo validate``. Each row is one class of mistake and what each door must say about it.

* ``SCHEMA``: the CRD refuses them at ``kubectl apply`` (the real API server's words, naming the field);
  ``hpo validate`` refuses the same, naming the same field in its own words.
* ``OPERATOR``: only the operator can judge them (the recipe's names, what the evaluator logs, what the
  API server says of the trial pod): ``kubectl apply`` succeeds, then the status shows ``SpecValid=False``
  naming the field, with one ``InvalidSpec`` Warning Event, and nothing is made for the study (no trial
  pod, no storage Secret); ``hpo validate`` refuses it with the same message.
* ``NOTES``: accepted, but not run as written (a range Optuna cuts, a sampler that falls back to random or
  that Optuna warns about): a condition False naming the field, a Warning Event, and a ``Note:`` line of
  ``hpo validate``. The studies are applied suspended, so no trial runs.

Every message must be free of library jargon and say the bad value (or the names that would do).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hpo_operator.cli.main import main as hpo_main
from hpo_operator.core import names
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.postgres import PostgresServer
from tests.integration.operator_env import (
    ROOT,
    TRIALS,
    Operator,
    apply,
    events,
    get_study,
    wait_for,
)

RECIPE = yaml.safe_load((ROOT / "examples" / "small-cpu-study.yaml").read_text())
RERANKER = yaml.safe_load((ROOT / "examples" / "reranker-study.yaml").read_text())
# What no message may say (pydantic's and jsonschema's words, Python's type names).
JARGON = ("Input should be", "after validation", "tuple", "dict_type", "Value error", "valid dictionary")


def recipe(change: Callable[[dict[str, Any]], Any], base: dict[str, Any] = RECIPE) -> dict[str, Any]:
    """The CPU example study (the built-in runner's recipe) with one change to its spec."""
    manifest = copy.deepcopy(base)
    change(manifest["spec"])
    return manifest


def custom(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """A custom-container study (a quadratic objective) with one change to its spec."""
    spec: dict[str, Any] = {
        "objective": [{"metric": "score", "direction": "maximize"}],
        "searchSpace": [
            {"name": "x", "type": "float", "low": -5.0, "high": 5.0},
            {"name": "w", "type": "float", "low": 0.0, "high": 1.0},
        ],
        "trials": {"total": 4, "parallelism": 2},
        "sampler": {"type": "TPE", "seed": 7},
        "template": {"command": ["python", str(TRIALS / "quadratic.py")]},
    }
    change(spec)
    return {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": "x"}, "spec": spec}


def space(s: dict[str, Any], index: int, **fields: Any) -> None:
    s["searchSpace"][index].update(fields)


@dataclass(frozen=True)
class Case:
    id: str
    manifest: dict[str, Any]
    field: str  # the field both doors name
    api: tuple[str, ...] = ()  # SCHEMA: words of the API server's refusal
    says: tuple[str, ...] = ()  # what hpo validate (and, for OPERATOR and NOTES, the status) says
    condition: str = "SpecValid"  # NOTES: the condition that says it
    reason: str = "InvalidSpec"


SCHEMA = [
    Case(
        "step-larger-than-range",
        recipe(lambda s: space(s, 2, step=0.5)),
        "spec.searchSpace[2].step",
        api=("step is larger than the range (high - low)", "single value low"),
        says=("0.5 is larger than the range [0.0, 0.2] (0.2 wide)", "single value 0.0", "at most 0.2"),
    ),
    Case(
        "int-step-larger-than-range",
        custom(
            lambda s: s["searchSpace"].append({"name": "k", "type": "int", "low": 1, "high": 3, "step": 5})
        ),
        "spec.searchSpace[2].step",
        api=("step is larger than the range (high - low)",),
        says=("5 is larger than the range [1, 3] (2 wide)",),
    ),
    Case(
        "negative-gpu",
        recipe(lambda s: s["template"]["resources"]["limits"].update({"nvidia.com/gpu": "-1"})),
        "spec.template.resources.limits.nvidia.com/gpu",
        api=("spec.template.resources.limits[nvidia.com/gpu]", '"-1"', "must not be negative"),
        says=("'-1' is negative; a resource quantity must be 0 or more",),
    ),
    Case(
        "negative-cpu-integer",
        recipe(lambda s: s["template"]["resources"]["requests"].update({"cpu": -2})),
        "spec.template.resources.requests.cpu",
        api=("spec.template.resources.requests[cpu]", "-2", "must not be negative"),
        says=("-2 is negative; a resource quantity must be 0 or more",),
    ),
    Case(
        "empty-objective",
        recipe(lambda s: s.update(objective=[])),
        "spec.objective",
        api=("spec.objective",),
        says=("must not be empty",),
    ),
    Case(
        "sampler-typo",
        recipe(lambda s: s["sampler"].update(type="TPEE")),
        "spec.sampler.type",
        api=("spec.sampler.type", '"TPEE"'),
        says=("must be one of TPE, Random,", "got 'TPEE' (did you mean 'TPE'?)"),
    ),
    Case(
        "pruner-field-typo",
        recipe(lambda s: s.update(pruner={"type": "Median", "nWarmupStep": 3})),
        "spec.pruner.nWarmupStep",
        api=('unknown field "spec.pruner.nWarmupStep"',),
        says=("unknown field (did you mean 'nWarmupSteps'?)",),
    ),
    Case(
        "zero-trials",
        recipe(lambda s: s["trials"].update(total=0)),
        "spec.trials.total",
        api=("spec.trials.total",),
        says=("must be at least 1, got 0",),
    ),
]

OPERATOR = [
    Case(
        "metric-typo",
        recipe(lambda s: s["objective"][0].update(metric="eval_sts-dev_spearman_cosin")),
        "spec.objective[0].metric",
        says=(
            "'eval_sts-dev_spearman_cosin' is not logged by the evaluator EmbeddingSimilarityEvaluator",
            "(did you mean 'eval_sts-dev_spearman_cosine'?)",
            "it logs: epoch, eval_runtime",
        ),
    ),
    Case(
        "metric-of-another-evaluator-name",
        recipe(lambda s: s["objective"][0].update(metric="eval_stsb_spearman_cosine")),
        "spec.objective[0].metric",
        says=("'eval_stsb_spearman_cosine' is not logged", "(did you mean 'eval_sts-dev_spearman_cosine'?)"),
    ),
    Case(
        "cross-encoder-metric-at-another-k",
        recipe(lambda s: s["objective"][0].update(metric="eval_msmarco-dev_ndcg@5"), RERANKER),
        "spec.objective[0].metric",
        says=(
            "'eval_msmarco-dev_ndcg@5' is not logged by the evaluator CrossEncoderRerankingEvaluator",
            "(did you mean 'eval_msmarco-dev_ndcg@10'?)",
        ),
    ),
    Case(
        "loss-typo",
        recipe(lambda s: s["trainer"]["loss"].update(name="CoSentLoss")),
        "spec.trainer.loss.name",
        says=("unknown loss 'CoSentLoss' (did you mean 'CoSENTLoss'?)",),
    ),
    Case(
        "evaluator-typo",
        recipe(lambda s: s["trainer"]["evaluator"].update(name="EmbeddingSimilarityEvaluater")),
        "spec.trainer.evaluator.name",
        says=(
            "unknown evaluator 'EmbeddingSimilarityEvaluater'",
            "(did you mean 'EmbeddingSimilarityEvaluator'?)",
        ),
    ),
    Case(
        "sampler-option-typo",
        recipe(lambda s: s["sampler"].update(options={"n_startup_trial": 3})),
        "spec.sampler.options.n_startup_trial",
        says=("not an option of the TPE sampler (did you mean 'n_startup_trials'?)",),
    ),
    Case(
        "recipe-field-typo",
        recipe(lambda s: s["trainer"].update(modle="x")),
        "spec.trainer.modle",
        says=("unknown field (did you mean 'model'?)",),
    ),
]

NOTES = [
    Case(
        "range-not-a-multiple-of-step",
        custom(lambda s: space(s, 1, step=0.3)),
        "spec.searchSpace[1].step",
        says=("the range [0.0, 1.0] of 'w' is not a multiple of step 0.3", "Optuna searches [0.0, 0.9]"),
        condition="SearchSpaceAsWritten",
        reason="RangeCut",
    ),
    Case(
        "cmaes-with-a-categorical-parameter",
        custom(
            lambda s: (
                s["searchSpace"].append({"name": "c", "type": "categorical", "choices": ["a", "b"]}),
                s["sampler"].update(type="CMAES"),
            )
        ),
        "spec.sampler.type",
        says=("the CMAES sampler cannot sample categorical parameters ('c')", "at random (RandomSampler)"),
        condition="SamplerFitsSpace",
        reason="SamplerFallsBack",
    ),
    Case(
        "qmc-scrambled-without-a-seed",
        custom(lambda s: s.update(sampler={"type": "QMC", "options": {"scramble": True}})),
        "spec.sampler",
        says=("Optuna warned when the QMC sampler was tried: No seed is provided for `QMCSampler`",),
        condition="SamplerFitsSpace",
        reason="SamplerWarned",
    ),
]


def hpo_validate(
    manifest: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """``hpo validate`` of the manifest, in this process: its exit code and what it printed."""
    path = tmp_path / f"{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        hpo_main(["validate", "--no-file-check", str(path)])
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out + out.err


def assert_plain(text: str) -> None:
    for word in JARGON:
        assert word not in text, f"library jargon {word!r} in: {text}"


# ------------------------------------------------------------------------------------- hpo validate


@pytest.mark.parametrize("case", SCHEMA + OPERATOR, ids=lambda c: c.id)
def test_hpo_validate_refuses_each_bad_manifest_naming_the_field(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = hpo_validate(case.manifest, tmp_path, capsys)
    assert code != 0, out
    line = " ".join(out.split())  # rich wraps long lines
    assert f"{case.field}: " in line, line
    for words in case.says:
        assert words in line, (words, line)
    assert line.count(f"{case.field}:") == 1, f"one message per problem: {line}"
    assert_plain(line)


@pytest.mark.parametrize("case", NOTES, ids=lambda c: c.id)
def test_hpo_validate_accepts_and_notes_what_will_not_run_as_written(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = hpo_validate(case.manifest, tmp_path, capsys)
    assert code == 0, out
    notes = [" ".join(n.split()) for n in re.split(r"\n(?=Note: )", out) if n.startswith("Note: ")]
    (note,) = [n for n in notes if n.startswith(f"Note: {case.field}: ")]
    for words in case.says:
        assert words in note, (words, note)


def test_hpo_validate_says_the_effective_parallelism_above_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = hpo_validate(recipe(lambda s: s["trials"].update(parallelism=10)), tmp_path, capsys)
    assert code == 0, out
    assert "trials      6, 6 at a time" in out
    note = "Note: spec.trials.parallelism: 10 is more than the 6 trials of spec.trials.total: at most 6 run"
    assert note in " ".join(out.split())


# ------------------------------------------------------------------------------ the real API server


@pytest.fixture(scope="module")
def study_namespace(cluster: Any) -> Iterator[str]:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    core = cluster.core()
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for("the default ServiceAccount", lambda: _has_default_sa(core, name), timeout=30)
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _has_default_sa(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
        return True
    except ApiException:
        return False


@pytest.fixture(scope="module")
def module_operator(
    cluster: Any, study_namespace: str, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpostudies.hpo.dev", "--timeout=60s")
    database = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(database)
    op = Operator(cluster, study_namespace, url, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()
        print(op.log[-6000:])
        postgres.drop_database(database)


def named(case: Case, namespace: str, **spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(case.manifest)
    manifest["metadata"] = {"name": case.id, "namespace": namespace}
    manifest["spec"].update(spec)
    return manifest


@pytest.mark.parametrize("case", SCHEMA, ids=lambda c: c.id)
def test_the_api_server_refuses_what_the_schema_can_check_naming_the_field(
    case: Case, cluster: Any, study_namespace: str, module_operator: Operator
) -> None:
    refused = apply(cluster, named(case, study_namespace), check=False)
    assert refused.returncode != 0, refused.stdout
    for words in case.api:
        assert words in refused.stderr, (words, refused.stderr)
    with pytest.raises(ApiException) as gone:
        get_study(cluster, study_namespace, case.id)
    assert gone.value.status == 404


@pytest.mark.parametrize("case", OPERATOR, ids=lambda c: c.id)
def test_the_operator_refuses_what_only_it_can_check_with_a_condition_and_an_event(
    case: Case, cluster: Any, study_namespace: str, module_operator: Operator
) -> None:
    apply(cluster, named(case, study_namespace))

    def refused() -> dict[str, Any] | None:
        body = get_study(cluster, study_namespace, case.id)
        conds = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}
        valid = conds.get("SpecValid")
        return valid if valid is not None and valid["status"] == "False" else None

    valid = wait_for(f"{case.id}: SpecValid=False", refused, timeout=60)
    assert valid["reason"] == "InvalidSpec"
    assert valid["message"].startswith(f"{case.field}: "), valid["message"]
    for words in case.says:
        assert words in valid["message"], (words, valid["message"])
    assert valid["message"].count(f"{case.field}:") == 1
    assert_plain(valid["message"])
    invalid = wait_for(
        f"{case.id}: an InvalidSpec Event",
        lambda: [e for e in events(cluster, study_namespace, case.id) if e.reason == "InvalidSpec"],
        timeout=30,
    )
    assert len(invalid) == 1 and invalid[0].type == "Warning"
    assert invalid[0].message == f"invalid spec: {valid['message']}"
    assert get_study(cluster, study_namespace, case.id)["status"]["phase"] == "Failed"
    # Nothing was made for it: no trial pod, no storage Secret.
    core = cluster.core()
    assert not [
        p for p in core.list_namespaced_pod(study_namespace).items if p.metadata.name.startswith(case.id)
    ]
    secrets = {s.metadata.name for s in core.list_namespaced_secret(study_namespace).items}
    assert names.default_secret_name(case.id) not in secrets


def test_a_trial_pod_the_api_server_refuses_is_refused_before_anything_is_made(
    cluster: Any, study_namespace: str, module_operator: Operator
) -> None:
    """The one refusal only the API server's dry run of a trial pod can give (a volume mount naming no
    volume): SpecValid=False naming spec.template, and no storage Secret made before it."""
    manifest = custom(lambda s: s["template"].update(volumeMounts=[{"name": "data", "mountPath": "/data"}]))
    manifest["metadata"] = {"name": "mount-without-volume", "namespace": study_namespace}
    apply(cluster, manifest)

    def refused() -> dict[str, Any] | None:
        body = get_study(cluster, study_namespace, "mount-without-volume")
        conds = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}
        valid = conds.get("SpecValid")
        return valid if valid is not None and valid["status"] == "False" else None

    valid = wait_for("SpecValid=False", refused, timeout=60)
    assert valid["message"].startswith("spec.template: the trial pod it makes is invalid: "), valid["message"]
    assert "volumeMounts[0].name" in valid["message"] and "data" in valid["message"]
    core = cluster.core()
    secrets = {s.metadata.name for s in core.list_namespaced_secret(study_namespace).items}
    assert names.default_secret_name("mount-without-volume") not in secrets
    assert not [
        p for p in core.list_namespaced_pod(study_namespace).items if p.metadata.name.startswith("mount-")
    ]


@pytest.mark.parametrize("case", NOTES, ids=lambda c: c.id)
def test_a_study_accepted_but_not_run_as_written_says_so_with_a_condition_and_an_event(
    case: Case, cluster: Any, study_namespace: str, module_operator: Operator
) -> None:
    apply(cluster, named(case, study_namespace, suspend=True))

    def said() -> dict[str, Any] | None:
        body = get_study(cluster, study_namespace, case.id)
        conds = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}
        return conds.get(case.condition)

    cond = wait_for(f"{case.id}: {case.condition}", said, timeout=60)
    body = get_study(cluster, study_namespace, case.id)
    spec_valid = next(c for c in body["status"]["conditions"] if c["type"] == "SpecValid")
    assert spec_valid["status"] == "True", json.dumps(body["status"])  # accepted: said, not refused
    assert cond["status"] == "False" and cond["reason"] == case.reason
    assert f"{case.field}: " in cond["message"], cond["message"]
    for words in case.says:
        assert words in cond["message"], (words, cond["message"])
    warned = wait_for(
        f"{case.id}: a {case.reason} Event",
        lambda: [e for e in events(cluster, study_namespace, case.id) if e.reason == case.reason],
        timeout=30,
    )
    assert len(warned) == 1 and warned[0].type == "Warning" and warned[0].message == cond["message"]
