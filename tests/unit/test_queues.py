"""Queues and cluster policy: the template's pod metadata, image pull Secrets, scheduler, runtime class,
security context, resource claims and scheduling gates in every trial pod; ``spec.queueName`` as Kueue's
queue label; a pod held back by scheduling gates is waiting (shown like a quota's refusal), never failed."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hpo_operator.core import names, verdict
from hpo_operator.core.observe import Announced, Observed, RunView, StudyView, TrialView, run_view
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.plan import DeleteRun, FailTrial, LaunchRun
from hpo_operator.core.pods import Owner, render_pod, storage_secret
from hpo_operator.core.reconcile import decide
from hpo_operator.core.spec import KUEUE_QUEUE_LABEL, StudySpec

from tests.unit.helpers import custom_spec, error_of

ROOT = Path(__file__).resolve().parents[2]
OWNER = Owner(name="demo", namespace="team-a", uid="uid-1")
OPTUNA_STUDY = names.optuna_study_name(OWNER.namespace, OWNER.name, OWNER.uid)
NOW = dt.datetime(2025, 1, 2, 12, 0, 0, tzinfo=dt.UTC)
PROJECT_LABELS = {
    "hpo.dev/study": "demo",
    "hpo.dev/trial": "3",
    "hpo.dev/attempt": "0",
    "app.kubernetes.io/managed-by": "hpo-operator",
}
POLICY: dict[str, Any] = {
    "metadata": {
        "labels": {"team": "nlp", "example.com/cost-center": "c-42", "kueue.x-k8s.io/priority-class": "high"},
        "annotations": {"example.com/owner": "ana@example.com", "note": "a free-form value: spaces, too"},
    },
    "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}],
    "schedulerName": "gpu-scheduler",
    "runtimeClassName": "nvidia",
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 2000},
    "resourceClaims": [
        {"name": "gpu", "resourceClaimTemplateName": "one-gpu"},
        {"name": "shared", "resourceClaimName": "nvlink-domain"},
    ],
    "schedulingGates": [{"name": "example.com/approval"}],
}


def spec_with(queue: str | None = None, **template: Any) -> StudySpec:
    raw = custom_spec()
    raw["template"].update(copy.deepcopy(template))
    if queue is not None:
        raw["queueName"] = queue
    return parse_spec(raw)


def pod_for(spec: StudySpec, trial: int = 3, attempt: int = 0) -> dict[str, Any]:
    return render_pod(
        spec,
        owner=OWNER,
        optuna_study=OPTUNA_STUDY,
        trial=trial,
        attempt=attempt,
        params={"x": 1.0, "n": 2, "kind": "a"},
        secret=storage_secret(spec, OWNER.name),
        default_image=None,
    )


# ------------------------------------------------------------------------------------ the pod's shape


def test_every_cluster_policy_field_of_the_template_is_in_every_trial_pod() -> None:
    resources = {"limits": {"nvidia.com/gpu": 1}, "claims": [{"name": "gpu"}]}
    spec = spec_with("team-a-gpus", resources=resources, **POLICY)
    for trial, attempt in ((3, 0), (7, 2)):
        pod = pod_for(spec, trial, attempt)
        meta, s = pod["metadata"], pod["spec"]
        assert meta["labels"] == {
            **POLICY["metadata"]["labels"],
            **PROJECT_LABELS,
            "hpo.dev/trial": str(trial),
            "hpo.dev/attempt": str(attempt),
            KUEUE_QUEUE_LABEL: "team-a-gpus",
        }
        assert meta["annotations"] == {
            **POLICY["metadata"]["annotations"],
            names.ANNOTATION_OPTUNA_STUDY: OPTUNA_STUDY,
        }
        assert s["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
        assert s["schedulerName"] == "gpu-scheduler"
        assert s["runtimeClassName"] == "nvidia"
        assert s["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 2000}
        assert s["resourceClaims"] == [
            {"name": "gpu", "resourceClaimTemplateName": "one-gpu"},
            {"name": "shared", "resourceClaimName": "nvlink-domain"},
        ]
        assert s["schedulingGates"] == [{"name": "example.com/approval"}]
        assert s["containers"][0]["resources"]["claims"] == [{"name": "gpu"}]
        # The whole pod is a valid v1 Pod (field names and types, strictly).
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    # Each pod gets its own copy: changing one does not change the template or the next pod.
    first = pod_for(spec)
    first["spec"]["securityContext"]["runAsUser"] = 0
    first["metadata"]["labels"]["team"] = "other"
    assert pod_for(spec)["spec"]["securityContext"]["runAsUser"] == 1000
    assert pod_for(spec)["metadata"]["labels"]["team"] == "nlp"


def test_without_those_fields_the_pod_has_none_of_them() -> None:
    pod = pod_for(spec_with())
    assert pod["metadata"]["labels"] == PROJECT_LABELS
    assert pod["metadata"]["annotations"] == {names.ANNOTATION_OPTUNA_STUDY: OPTUNA_STUDY}
    for field in (
        "imagePullSecrets",
        "schedulerName",
        "runtimeClassName",
        "securityContext",
        "resourceClaims",
        "schedulingGates",
    ):
        assert field not in pod["spec"], field


def test_a_queue_name_becomes_kueues_queue_label_and_nothing_else() -> None:
    pod = pod_for(spec_with("team-a-gpus"))
    assert pod["metadata"]["labels"] == {**PROJECT_LABELS, "kueue.x-k8s.io/queue-name": "team-a-gpus"}
    # Kueue adds its own admission gate; the operator adds none.
    assert "schedulingGates" not in pod["spec"]
    assert pod["metadata"]["annotations"] == {names.ANNOTATION_OPTUNA_STUDY: OPTUNA_STUDY}


def test_the_examples_queue_study_parses_and_renders_a_valid_pod() -> None:
    raw = yaml.safe_load((ROOT / "examples" / "kueue-study.yaml").read_text())
    spec = parse_spec(raw["spec"])
    pod = pod_for(spec)
    assert pod["metadata"]["labels"][KUEUE_QUEUE_LABEL] == spec.queue_name
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


# ------------------------------------------------------------------------------- spec parsing, refusals


@pytest.mark.parametrize(
    "key",
    ["hpo.dev/study", "hpo.dev/trial", "hpo.dev/attempt", "hpo.dev/anything", "app.kubernetes.io/managed-by"],
)
def test_a_label_the_operator_owns_is_refused_naming_it(key: str) -> None:
    e = error_of(custom_spec(template={"command": ["python", "o.py"], "metadata": {"labels": {key: "mine"}}}))
    assert e.field == f"spec.template.metadata.labels.{key}"
    assert "the operator sets this label on every trial pod" in str(e)
    assert "choose another key" in str(e)


def test_the_queue_label_in_the_template_is_refused_pointing_at_queue_name() -> None:
    template = {"command": ["python", "o.py"], "metadata": {"labels": {KUEUE_QUEUE_LABEL: "q"}}}
    e = error_of(custom_spec(template=template))
    assert e.field == "spec.template.metadata.labels.kueue.x-k8s.io/queue-name"
    assert "spec.queueName" in str(e)


def test_an_annotation_the_operator_owns_is_refused_other_annotations_are_free() -> None:
    template = {"command": ["python", "o.py"], "metadata": {"annotations": {"hpo.dev/optuna-study": "x"}}}
    e = error_of(custom_spec(template=template))
    assert e.field == "spec.template.metadata.annotations.hpo.dev/optuna-study"
    assert "the operator sets this annotation" in str(e)
    # app.kubernetes.io/managed-by is only a reserved label; as an annotation it is the user's.
    ok = {"command": ["python", "o.py"], "metadata": {"annotations": {"app.kubernetes.io/managed-by": "x"}}}
    assert parse_spec(custom_spec(template=ok)).template.metadata.annotations == {
        "app.kubernetes.io/managed-by": "x"
    }


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"queueName": "Team A"}, "spec.queueName", "is not a LocalQueue name"),
        ({"queueName": "q" * 64}, "spec.queueName", "at most 63 characters"),
        ({"queueName": 5}, "spec.queueName", "must be a string"),
        (
            {"template": {"metadata": {"labels": {"bad key!": "v"}}}},
            "spec.template.metadata.labels.bad key!",
            "not a valid label key",
        ),
        (
            {"template": {"metadata": {"labels": {"Bad_Prefix/k": "v"}}}},
            "spec.template.metadata.labels.Bad_Prefix/k",
            "DNS subdomain",
        ),
        (
            {"template": {"metadata": {"labels": {"team": "a b"}}}},
            "spec.template.metadata.labels.team",
            "is not a label value",
        ),
        (
            {"template": {"metadata": {"labels": {"team": "v" * 64}}}},
            "spec.template.metadata.labels.team",
            "at most 63 characters",
        ),
        (
            {"template": {"metadata": {"labels": {"team": 3}}}},
            "spec.template.metadata.labels.team",
            "must be a string",
        ),
        (
            {"template": {"metadata": {"labels": {f"k{i}": "v" for i in range(65)}}}},
            "spec.template.metadata.labels",
            "at most 64 entries",
        ),
        ({"template": {"metadata": {"name": "x"}}}, "spec.template.metadata.name", "unknown field"),
        ({"template": {"imagePullSecrets": [{}]}}, "spec.template.imagePullSecrets[0].name", "required"),
        (
            {"template": {"imagePullSecrets": ["regcred"]}},
            "spec.template.imagePullSecrets[0]",
            "must be an object",
        ),
        (
            {"template": {"schedulerName": "My Scheduler"}},
            "spec.template.schedulerName",
            "is not an object name",
        ),
        ({"template": {"runtimeClassName": ""}}, "spec.template.runtimeClassName", "must not be empty"),
        ({"template": {"securityContext": "root"}}, "spec.template.securityContext", "must be an object"),
        (
            {"template": {"resourceClaims": [{"name": "gpu"}]}},
            "spec.template.resourceClaims[0]",
            "exactly one of",
        ),
        (
            {
                "template": {
                    "resourceClaims": [
                        {"name": "g", "resourceClaimName": "a", "resourceClaimTemplateName": "b"}
                    ]
                }
            },
            "spec.template.resourceClaims[0]",
            "exactly one of",
        ),
        (
            {
                "template": {
                    "resourceClaims": [
                        {"name": "g", "resourceClaimName": "a"},
                        {"name": "g", "resourceClaimName": "b"},
                    ]
                }
            },
            "spec.template.resourceClaims[1].name",
            "listed twice",
        ),
        (
            {"template": {"resources": {"claims": [{"name": "gpu"}]}}},
            "spec.template.resources.claims[0].name",
            "names no entry of spec.template.resourceClaims",
        ),
        (
            {"template": {"schedulingGates": [{"name": "a/b/c"}]}},
            "spec.template.schedulingGates[0].name",
            "not a gate name",
        ),
        (
            {"template": {"schedulingGates": [{"name": "example.com/g"}, {"name": "example.com/g"}]}},
            "spec.template.schedulingGates[1].name",
            "listed twice",
        ),
    ],
)
def test_bad_cluster_policy_fields_are_refused_naming_the_field(
    change: dict[str, Any], field: str, words: str
) -> None:
    raw = custom_spec()
    for key, value in change.items():
        if key == "template":
            raw["template"].update(value)
        else:
            raw[key] = value
    e = error_of(raw)
    assert e.field == field, str(e)
    assert words in str(e), str(e)


def test_the_fields_parse_to_typed_values() -> None:
    spec = spec_with("q.team-a", **POLICY)
    t = spec.template
    assert spec.queue_name == "q.team-a"
    assert [s.name for s in t.image_pull_secrets] == ["regcred", "mirror"]
    assert t.scheduler_name == "gpu-scheduler" and t.runtime_class_name == "nvidia"
    assert t.resource_claims[0].resource_claim_template_name == "one-gpu"
    assert t.resource_claims[1].resource_claim_name == "nvlink-domain"
    assert [g.name for g in t.scheduling_gates] == ["example.com/approval"]
    assert t.metadata.labels["team"] == "nlp"


# ------------------------------------------------------------------------- a gated pod is waiting


def gated_pod(
    name: str = "demo-trial-0", trial: int = 0, gates: tuple[str, ...] = ("kueue.x-k8s.io/admission",)
) -> dict[str, Any]:
    """A trial pod as the API server returns it while scheduling gates hold it back (1.30+)."""
    return {
        "metadata": {
            "name": name,
            "labels": names.pod_labels("demo", trial, 0),
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "ownerReferences": [{"kind": names.KIND, "uid": "uid-1", "controller": True}],
        },
        "spec": {"schedulingGates": [{"name": g} for g in gates], "containers": [{"name": "trial"}]},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "SchedulingGated",
                    "message": "Scheduling is blocked due to non-empty scheduling gates",
                }
            ],
        },
    }


def test_a_gated_pod_is_seen_as_waiting_for_its_gates() -> None:
    r = run_view(gated_pod(gates=("kueue.x-k8s.io/admission", "example.com/approval")))
    assert r is not None
    assert r.gated and r.active and r.phase == "Pending"
    assert r.gates == ("kueue.x-k8s.io/admission", "example.com/approval")
    assert r.reason == "SchedulingGated"
    assert r.message == "waiting for the scheduling gate(s) kueue.x-k8s.io/admission, example.com/approval"
    # Gated for a day is still not stuck: it waits for admission, it is not failing.
    assert r.stuck(NOW + dt.timedelta(days=1)) is None
    # Once the gates are removed it is an ordinary pending pod.
    ungated = gated_pod(gates=())
    ungated["status"]["conditions"] = []
    r2 = run_view(ungated)
    assert r2 is not None and not r2.gated and r2.gates == ()


def _observed(trials: list[TrialView], runs: list[RunView | None], previous_phase: str | None) -> Observed:
    finished = [t.number for t in trials if t.finished]
    return Observed(
        name="demo",
        study_name=OPTUNA_STUDY,
        owner_uid="uid-1",
        study=StudyView(OPTUNA_STUDY, ("maximize",), 0, Announced().add(finished)),
        trials=tuple(trials),
        runs=tuple(r for r in runs if r is not None),
        previous_phase=previous_phase,
    )


def _spec(total: int = 3) -> StudySpec:
    raw = custom_spec(trials={"total": total, "parallelism": 2, "maxFailed": 0, "retries": 0}, queueName="q")
    return parse_spec(raw)


def test_a_gated_trial_is_not_failed_retried_or_deleted_and_holds_its_slot_without_more_asks() -> None:
    spec = _spec()
    started = NOW - dt.timedelta(hours=6)
    trials = [
        TrialView(0, "RUNNING", {"x": 1.0, "n": 1, "kind": "a"}, launched=0, started=started),
        TrialView(1, "RUNNING", {"x": 2.0, "n": 2, "kind": "b"}, launched=0, started=started),
    ]
    runs = [run_view(gated_pod("demo-trial-0", 0)), run_view(gated_pod("demo-trial-1", 1))]
    plan = decide(spec, _observed(trials, runs, "Pending"), NOW)
    bad = [a for a in plan.actions if isinstance(a, DeleteRun | FailTrial | LaunchRun)]
    assert bad == [], plan.actions
    assert plan.actions == ()  # both slots are held: nothing asked while both wait
    a = plan.assessment
    assert a.phase == "Pending" and a.reason == "WaitingForTrials"
    assert a.counts.failed == 0 and a.counts.running == 2 and a.counts.started == 2
    assert (
        "demo-trial-0 is pending (SchedulingGated: waiting for the scheduling gate(s) "
        "kueue.x-k8s.io/admission)" in a.message
    )

    # A study already running: one gated trial beside one running is "waiting to start".
    done = TrialView(2, "COMPLETE", {"x": 0.0, "n": 1, "kind": "a"}, (0.5,), launched=0, completed=NOW)
    running = {
        "metadata": {**gated_pod("demo-trial-1", 1)["metadata"]},
        "spec": {},
        "status": {"phase": "Running"},
    }
    plan = decide(
        spec, _observed([*trials, done], [run_view(gated_pod()), run_view(running)], "Running"), NOW
    )
    assert [a for a in plan.actions if isinstance(a, DeleteRun | FailTrial | LaunchRun)] == []
    assert plan.assessment.phase == "Running"
    assert (
        "1 running, 1 waiting to start: demo-trial-0 is pending (SchedulingGated" in plan.assessment.message
    )


def cond(status: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in (status or {}).get("conditions") or () if c["type"] == kind), None)


def test_gated_pods_show_in_the_status_like_a_quotas_refusal_and_clear_when_admitted() -> None:
    spec = _spec()
    trials = [TrialView(0, "RUNNING", {"x": 1.0, "n": 1, "kind": "a"}, launched=0, started=NOW)]
    obs = _observed(trials, [run_view(gated_pod())], "Pending")
    plan = decide(spec, obs, NOW)
    held = verdict.reconciled(spec, obs, plan, quota=None, generation=1, previous={}, now=NOW)
    admitted = cond(held.status, "TrialPodsAdmitted")
    assert admitted is not None
    assert (admitted["status"], admitted["reason"]) == ("False", "SchedulingGated")
    assert admitted["message"] == (
        "1 trial pod(s) waiting for admission (scheduling gates): "
        "demo-trial-0 is gated by kueue.x-k8s.io/admission"
    )
    assert (
        held.status is not None and held.status["phase"] == "Pending" and held.status["trials"]["failed"] == 0
    )
    assert not held.terminal and held.events == ()
    assert held.log == (("info", admitted["message"]),)
    # Still gated on the next reconcile (or after a restart): the same condition, no new log line.
    status = {**(held.status or {})}
    again = verdict.reconciled(spec, obs, plan, quota=None, generation=1, previous=status, now=NOW)
    assert again.log == () and cond(again.status or status, "TrialPodsAdmitted") == admitted

    # A ResourceQuota's refusal is said first: it is what holds the next pod back.
    quota = verdict.reconciled(
        spec, obs, plan, quota="exceeded quota: q", generation=1, previous=status, now=NOW
    )
    assert (cond(quota.status, "TrialPodsAdmitted") or {}).get("reason") == "QuotaExceeded"

    # Admitted (the gate removed, the pod running): True again, reason Admitted.
    running = run_view({**gated_pod(), "spec": {}, "status": {"phase": "Running"}})
    obs2 = _observed(trials, [running], "Pending")
    plan2 = decide(spec, obs2, NOW)
    fits = verdict.reconciled(spec, obs2, plan2, quota=None, generation=1, previous=status, now=NOW)
    ok = cond(fits.status, "TrialPodsAdmitted")
    assert ok is not None and (ok["status"], ok["reason"]) == ("True", "Admitted")
    assert fits.status is not None and fits.status["phase"] == "Running"


def test_a_gated_pod_of_another_study_with_the_same_name_is_not_counted() -> None:
    spec = _spec()
    foreign = gated_pod()
    foreign["metadata"]["ownerReferences"] = [{"kind": names.KIND, "uid": "old-uid", "controller": True}]
    obs = _observed([], [run_view(foreign)], "Pending")
    report = verdict.reconciled(
        spec, obs, decide(spec, obs, NOW), quota=None, generation=1, previous={}, now=NOW
    )
    assert cond(report.status, "TrialPodsAdmitted") is None


def test_the_operators_labels_win_even_over_a_template_that_skipped_the_checks() -> None:
    # parse_spec refuses these keys; a StudySpec built without it still cannot move a pod out of its study.
    raw = custom_spec(queueName="q")
    raw["template"]["metadata"] = {
        "labels": {"hpo.dev/study": "other", KUEUE_QUEUE_LABEL: "elsewhere", "team": "nlp"},
        "annotations": {names.ANNOTATION_OPTUNA_STUDY: "other"},
    }
    spec = StudySpec.model_validate(raw)
    meta = pod_for(spec)["metadata"]
    assert meta["labels"] == {**PROJECT_LABELS, KUEUE_QUEUE_LABEL: "q", "team": "nlp"}
    assert meta["annotations"] == {names.ANNOTATION_OPTUNA_STUDY: OPTUNA_STUDY}
