"""Several trials on one GPU: the spec field, slot assignment over shared ResourceClaims, the claims that
go, what the status tells, and the local device assignment of ``hpo run`` (``hpo_operator.core.claims``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hpo_operator.core import claims, pods, verdict
from hpo_operator.core.claims import ClaimView, GpuState, PodSlot
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
UID = "uid-1"
OWNER = pods.Owner("s", "ns", UID)


def spec(**trials: Any) -> Any:
    raw: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        "trials": {"total": 12, "parallelism": 6, **trials},
        "template": {"command": ["python", "t.py"]},
    }
    return parse_spec(raw)


def claim(index: int, device: str | None = None, *, deleting: bool = False, owner: str = UID) -> ClaimView:
    return ClaimView(
        name=claims.claim_name("s", index),
        index=index,
        owner_uid=owner,
        device=device,
        deleting=deleting,
        created=NOW - dt.timedelta(minutes=5),
    )


def pod(
    name: str, index: int, *, active: bool = True, waiting: str | None = None, age_s: int = 60
) -> PodSlot:
    return PodSlot(
        pod=name,
        claim=claims.claim_name("s", index),
        active=active,
        created=NOW - dt.timedelta(seconds=age_s),
        waiting=waiting,
    )


# ------------------------------------------------------------------------------------------ the spec


def test_per_gpu_defaults_to_one_and_keeps_the_device_plugin_limit() -> None:
    s = spec()
    assert s.trials.per_gpu == 1 and not s.gpu_claims
    pod_ = pods.render_pod(
        s,
        owner=OWNER,
        optuna_study="o",
        trial=0,
        attempt=0,
        params={"x": 0.5},
        secret=pods.SecretKey("sec", "url"),
        default_image="img",
    )
    assert pod_["spec"]["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert "resourceClaims" not in pod_["spec"]


@pytest.mark.parametrize("value", [0, -1])
def test_per_gpu_below_one_is_refused_naming_the_field(value: int) -> None:
    with pytest.raises(SpecError) as e:
        spec(perGPU=value)
    assert e.value.field == "spec.trials.perGPU"
    assert f"must be at least 1, got {value}" in str(e.value)


def test_per_gpu_must_be_an_integer() -> None:
    with pytest.raises(SpecError) as e:
        spec(perGPU="3")
    assert e.value.field == "spec.trials.perGPU"


def test_a_device_plugin_limit_next_to_shared_claims_is_refused_naming_it() -> None:
    raw: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        "trials": {"perGPU": 2},
        "template": {"command": ["python", "t.py"], "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": 1}}},
    }
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert e.value.field == "spec.template.resources.limits.nvidia.com/gpu"
    assert "spec.trials.perGPU is 2" in str(e.value)


def test_a_template_claim_named_like_the_shared_gpu_claim_is_refused_not_replaced() -> None:
    template = {
        "command": ["python", "t.py"],
        "resourceClaims": [{"name": "gpu", "resourceClaimName": "team-gpu"}],
        "resources": {"claims": [{"name": "gpu"}]},
    }
    raw: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        "trials": {"perGPU": 2},
        "template": template,
    }
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert e.value.field == "spec.template.resourceClaims[0].name"
    assert "choose another name" in str(e.value)
    raw["trials"] = {"perGPU": 1}  # no shared claim: the template's own claim is the user's to name
    assert parse_spec(raw).template.resource_claims[0].name == "gpu"


def test_the_gpu_section_alone_asks_for_claims_and_is_checked() -> None:
    raw: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        "gpu": {"deviceClassName": "mig.nvidia.com"},
        "template": {"command": ["python", "t.py"]},
    }
    s = parse_spec(raw)
    assert s.gpu_claims and claims.device_class(s, "gpu.nvidia.com") == (
        "mig.nvidia.com",
        "spec.gpu.deviceClassName",
    )
    raw["gpu"] = {"deviceClassName": ""}
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert e.value.field == "spec.gpu.deviceClassName"
    raw["gpu"] = {"driverConfig": {"parameters": {}}}
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert e.value.field == "spec.gpu.driverConfig.driver"


# ------------------------------------------------------------------------------------------ rendering


def test_a_claim_asks_for_one_device_of_the_class_with_the_drivers_config_passed_through() -> None:
    raw: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        "trials": {"perGPU": 4},
        "gpu": {
            "driverConfig": {
                "driver": "gpu.nvidia.com",
                "parameters": {
                    "apiVersion": "resource.nvidia.com/v1beta1",
                    "kind": "GpuConfig",
                    "sharing": {"strategy": "MPS"},
                },
            }
        },
        "template": {"command": ["python", "t.py"]},
    }
    s = parse_spec(raw)
    body = claims.render_claim(s, OWNER, "s-gpu-0", "gpu.example.com")
    assert body["apiVersion"] == "resource.k8s.io/v1" and body["kind"] == "ResourceClaim"
    assert body["metadata"]["ownerReferences"][0]["uid"] == UID
    assert body["metadata"]["labels"]["hpo.dev/study"] == "s"
    (request,) = body["spec"]["devices"]["requests"]
    assert request == {
        "name": "gpu",
        "exactly": {"deviceClassName": "gpu.example.com", "allocationMode": "ExactCount", "count": 1},
    }
    (config,) = body["spec"]["devices"]["config"]
    assert config["requests"] == ["gpu"] and config["opaque"]["driver"] == "gpu.nvidia.com"
    assert config["opaque"]["parameters"]["sharing"] == {"strategy": "MPS"}


def test_attach_replaces_the_gpu_limit_with_the_claim() -> None:
    s = spec(perGPU=3)
    pod_ = pods.render_pod(
        s,
        owner=OWNER,
        optuna_study="o",
        trial=0,
        attempt=0,
        params={"x": 0.5},
        secret=pods.SecretKey("sec", "url"),
        default_image="img",
    )
    claims.attach(pod_, "s-gpu-1")
    assert pod_["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimName": "s-gpu-1"}]
    assert pod_["spec"]["containers"][0]["resources"] == {"claims": [{"name": "gpu"}]}
    assert claims.pod_claim(pod_) == "s-gpu-1"
    claims.attach(pod_, "s-gpu-2")  # attaching again replaces, never duplicates
    assert pod_["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimName": "s-gpu-2"}]


def test_attach_keeps_a_users_own_claims_and_other_limits() -> None:
    pod_: dict[str, Any] = {
        "spec": {
            "resourceClaims": [{"name": "fast-disk", "resourceClaimName": "d"}],
            "containers": [{"resources": {"limits": {"cpu": "2"}, "claims": [{"name": "fast-disk"}]}}],
        }
    }
    claims.attach(pod_, "s-gpu-0")
    assert [c["name"] for c in pod_["spec"]["resourceClaims"]] == ["fast-disk", "gpu"]
    assert pod_["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "2"},
        "claims": [{"name": "fast-disk"}, {"name": "gpu"}],
    }


# ------------------------------------------------------------------------------------- observation


def test_claim_and_pod_views_read_the_api_servers_json() -> None:
    raw = {
        "metadata": {
            "name": "s-gpu-3",
            "creationTimestamp": "2026-01-01T11:00:00Z",
            "ownerReferences": [{"kind": "HPOStudy", "uid": UID}],
        },
        "status": {
            "allocation": {
                "devices": {"results": [{"request": "gpu", "driver": "d", "pool": "node", "device": "gpu-1"}]}
            },
            "reservedFor": [{"resource": "pods", "name": "s-trial-0", "uid": "u"}],
        },
    }
    view = claims.claim_view(raw)
    assert (view.name, view.index, view.owner_uid, view.device) == ("s-gpu-3", 3, UID, "d/node/gpu-1")
    assert view.reserved_for == ("s-trial-0",) and not view.deleting
    assert claims.claim_view({"metadata": {"name": "other"}}).device is None
    pending = {
        "metadata": {"name": "s-trial-1", "creationTimestamp": "2026-01-01T11:59:00Z"},
        "spec": {"resourceClaims": [{"name": "gpu", "resourceClaimName": "s-gpu-3"}]},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "message": "cannot allocate all claims"}
            ],
        },
    }
    slot = claims.pod_slot(pending)
    assert slot is not None and slot.claim == "s-gpu-3" and slot.active
    assert slot.waiting == "cannot allocate all claims"
    done = {**pending, "status": {"phase": "Failed"}}
    assert claims.pod_slot(done).active is False  # type: ignore[union-attr]
    assert claims.pod_slot({"metadata": {"name": "p"}, "spec": {}}) is None


# --------------------------------------------------------------------------------------- decisions


def test_the_first_pod_creates_the_first_claim() -> None:
    assert claims.assign_slot("s", UID, [], [], 3) == claims.Slot("s-gpu-0", create=True)


def test_pods_fill_the_fullest_claim_with_a_free_slot_first() -> None:
    cs = [claim(0, "d/n/gpu-0"), claim(1, "d/n/gpu-1")]
    ps = [pod("a", 0), pod("b", 1), pod("c", 1)]
    assert claims.assign_slot("s", UID, cs, ps, 3) == claims.Slot("s-gpu-1", create=False)
    ps.append(pod("d", 1))
    assert claims.assign_slot("s", UID, cs, ps, 3) == claims.Slot("s-gpu-0", create=False)


def test_finished_pods_free_their_slot() -> None:
    cs = [claim(0, "d/n/gpu-0")]
    ps = [pod("a", 0), pod("b", 0, active=False), pod("c", 0, active=False)]
    assert claims.assign_slot("s", UID, cs, ps, 2) == claims.Slot("s-gpu-0", create=False)


def test_a_full_set_of_claims_gets_a_new_one_at_the_lowest_free_index() -> None:
    cs = [claim(0), claim(2)]
    ps = [pod("a", 0), pod("b", 2)]
    assert claims.assign_slot("s", UID, cs, ps, 1) == claims.Slot("s-gpu-1", create=True)


def test_a_claim_being_deleted_or_not_ours_takes_no_pod_and_keeps_its_name() -> None:
    cs = [claim(0, deleting=True), claim(1, owner="older-namesake")]
    assert claims.assign_slot("s", UID, cs, [], 3) == claims.Slot("s-gpu-2", create=True)


def test_a_pod_referencing_a_claim_not_listed_still_holds_that_name() -> None:
    # The pod's claim was deleted from under it: a new claim does not take its name.
    assert claims.assign_slot("s", UID, [], [pod("a", 0)], 3) == claims.Slot("s-gpu-1", create=True)


@pytest.mark.parametrize(
    ("parallelism", "per_gpu", "pods_on"),
    [(6, 3, [3, 3]), (4, 3, [3, 1]), (5, 2, [2, 2, 1]), (8, 8, [8])],
)
def test_assigning_one_pod_at_a_time_never_exceeds_per_gpu(
    parallelism: int, per_gpu: int, pods_on: list[int]
) -> None:
    cs: list[ClaimView] = []
    ps: list[PodSlot] = []
    for i in range(parallelism):
        slot = claims.assign_slot("s", UID, cs, ps, per_gpu)
        if slot.create:
            cs.append(claim(int(slot.claim.rsplit("-", 1)[1])))
        ps.append(PodSlot(f"p{i}", slot.claim, True))
    used = claims.occupancy(cs, ps)
    assert [used[c.name] for c in cs] == pods_on


def test_idle_claims_are_kept_while_trials_remain_and_deleted_after() -> None:
    cs = [claim(0), claim(1)]
    ps = [pod("a", 0), pod("b", 1, active=False)]
    s = spec(perGPU=3)
    # 12 trials, 6 at once, 3 per GPU: two claims are wanted while trials remain to be asked.
    wanted = claims.demand(s, phase="Running", running=1, started=5)
    assert wanted == 6 and claims.surplus(UID, cs, ps, 3, wanted) == []
    # The budget is spent: only the running trial wants a slot, which its claim gives.
    wanted = claims.demand(s, phase="Running", running=1, started=12)
    assert wanted == 1 and claims.surplus(UID, cs, ps, 3, wanted) == ["s-gpu-1"]
    # Finished: every idle claim goes; a claim with an active pod stays until the pod ends.
    assert claims.demand(s, phase="Succeeded", running=0, started=12) == 0
    assert claims.surplus(UID, cs, ps, 3, 0) == ["s-gpu-1"]
    assert claims.surplus(UID, cs, [pod("a", 0, active=False)], 3, 0) == ["s-gpu-0", "s-gpu-1"]


def test_surplus_leaves_claims_being_deleted_and_others_claims_alone() -> None:
    cs = [claim(0, deleting=True), claim(1, owner="x"), claim(2)]
    assert claims.surplus(UID, cs, [], 3, 0) == ["s-gpu-2"]


# --------------------------------------------------------------------------------------- what to tell


def test_a_claim_that_stays_unallocated_is_told_with_the_schedulers_word() -> None:
    s = spec(perGPU=3)
    cs = [claim(0, "d/n/gpu-0"), claim(1)]
    waiting = "0/1 nodes are available: 1 cannot allocate all claims."
    ps = [pod("a", 0), pod("b", 1, waiting=waiting, age_s=5)]
    state = claims.gpu_state(s, cs, ps, NOW, default_class="gpu.nvidia.com")
    assert state.ok and state.reason == "ClaimsAllocated"
    assert "s-gpu-0 on gpu-0 (1 trial(s))" in state.message and "s-gpu-1 on no device yet" in state.message
    ps = [pod("a", 0), pod("b", 1, waiting=waiting, age_s=45)]
    state = claims.gpu_state(s, cs, ps, NOW, default_class="gpu.nvidia.com")
    assert not state.ok and state.reason == "ClaimsUnallocated" and state.field == "spec.trials.perGPU"
    assert "s-gpu-1" in state.message and "gpu.nvidia.com" in state.message and waiting in state.message


def test_the_summary_names_at_most_ten_claims() -> None:
    s = spec(perGPU=2)
    state = claims.gpu_state(s, [claim(i, f"d/n/gpu-{i}") for i in range(13)], [], NOW, default_class=None)
    assert state.ok and "s-gpu-9 on gpu-9" in state.message and "s-gpu-10" not in state.message
    assert state.message.endswith("and 3 more")


def test_the_condition_and_its_event_are_told_once_per_cause() -> None:
    bad = GpuState(False, "DeviceClassNotFound", "DeviceClass 'x' does not exist", "spec.gpu.deviceClassName")
    extra: list[dict[str, Any]] = []
    events: list[Any] = []
    log: list[Any] = []
    verdict._gpu_condition(bad, extra, events, log, generation=1, previous={}, now=NOW)
    (cond,) = extra
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "GPUClaimsReady",
        "False",
        "DeviceClassNotFound",
    )
    assert cond["message"].startswith("spec.gpu.deviceClassName: DeviceClass 'x'")
    assert [(e.type, e.reason) for e in events] == [("Warning", "DeviceClassNotFound")]
    previous = {"conditions": extra}
    extra2: list[dict[str, Any]] = []
    events2: list[Any] = []
    verdict._gpu_condition(bad, extra2, events2, [], generation=1, previous=previous, now=NOW)
    assert events2 == [] and extra2[0]["status"] == "False"  # the status says it already
    good = GpuState(True, "ClaimsAllocated", "2 ResourceClaim(s)")
    events3: list[Any] = []
    verdict._gpu_condition(good, [], events3, [], generation=1, previous=previous, now=NOW)
    assert [(e.type, e.reason) for e in events3] == [("Normal", "GPUClaimsReady")]


# ------------------------------------------------------------------------------------------- local


def test_local_parallelism_is_capped_by_gpus_times_per_gpu() -> None:
    assert claims.local_parallelism(6, 0, 3) == 6  # no GPU: perGPU has no effect
    assert claims.local_parallelism(6, 1, 3) == 3
    assert claims.local_parallelism(6, 2, 4) == 6


def test_local_devices_spread_up_to_per_gpu_each() -> None:
    devices = ["0", "1"]
    assert claims.assign_device(devices, [], 2) == "0"
    assert claims.assign_device(devices, ["0"], 2) == "1"
    assert claims.assign_device(devices, ["0", "1"], 2) == "0"
    assert claims.assign_device(devices, ["0", "1", "0", "1"], 2) is None
