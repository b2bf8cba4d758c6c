"""The HPOStudy spec as frozen, typed objects.

:func:`parse_fields` checks everything the CRD schema checks (so a spec that reaches the operator
without the API server, as in ``hpo run``, gets the same answers) and what the schema cannot: that the
pruner's fields belong to its type, and (through :mod:`hpo_trial.trainer_spec`) that the built-in
runner's recipe is sound. The one way in is :func:`hpo_operator.core.parse.parse_spec`,
which adds what needs the search space as Optuna distributions (:mod:`hpo_operator.core.search_space`,
which builds on this module): that the sampler can handle the search space and that enqueued parameter
sets fit it.

Every problem is reported as a :class:`FieldIssue` whose ``path`` names the field the way a user wrote
it, ``spec.searchSpace[1].low``; :class:`SpecError` carries them all.

Python attribute names are snake_case; the spec's own (camelCase) names are the aliases, and
``StudySpec.model_validate`` accepts only those, so ``parse_spec`` and the CRD agree on spelling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from hpo_trial import contract, trainer_spec
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic.alias_generators import to_camel

SAMPLER_TYPES = ("TPE", "Random", "CMAES", "Grid", "QMC", "NSGAII", "GP", "NSGAIII", "BruteForce")
PRUNER_TYPES = (
    "None",
    "Median",
    "Percentile",
    "SuccessiveHalving",
    "Hyperband",
    "Wilcoxon",
    "Threshold",
    "Patient",
)
PARAM_TYPES = ("int", "float", "categorical")
DIRECTIONS = ("maximize", "minimize")
MAX_STUDY_NAME_LENGTH = 40
# The CRD's bounds (crds/hpo.dev_hpostudies.yaml), repeated so that `hpo validate` refuses what the API
# server refuses; tests/unit/test_crd.py walks the schema and checks every bound has its twin here.
MAX_OBJECTIVES = 16
MAX_METRIC_LENGTH = 256
MAX_PARAMS = 64
MAX_PARAM_NAME_LENGTH = 128
MAX_CHOICES = 256
MAX_RETRIES = 100
MAX_ENQUEUED = 1000
MAX_ENV = 256
# Pod metadata a template may add: at most this many labels and annotations each (the CRD's maxProperties).
MAX_POD_METADATA = 64
# A Kubernetes label value (at most 63 characters), the CRD's pattern.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MAX_LABEL_VALUE_LENGTH = 63
# A Kubernetes qualified name (label and annotation keys, scheduling gates): [prefix/]name.
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# spec.queueName: a Kueue LocalQueue's name, carried as a label value (the CRD's pattern).
QUEUE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# Kueue's plain-Pod integration: the label naming the LocalQueue, set from spec.queueName only.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Label and annotation keys the operator owns on every trial pod; a template may not set them.
RESERVED_KEY_PREFIX = "hpo.dev/"
RESERVED_LABELS = frozenset({"app.kubernetes.io/managed-by", KUEUE_QUEUE_LABEL})
MAX_RESOURCES = 16  # resource names in template.resources.limits or .requests (bounds the CRD's rule cost)
# A Kubernetes resource quantity (the CRD's pattern, Kubernetes' own): 2, 500m, 16Gi, 1e3. The CRD
# refuses a negative one by a rule of its own (minimum 0 for an integer, no leading minus for a string).
MAX_PER_GPU = 64
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource
GPU_CLAIM = "gpu"  # the pod's name for its shared GPU claim (perGPU, spec.gpu); a template may not use it
QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# Parameter names are training-argument names (``learning_rate``) or ``loss.<arg>``.
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# The variables the operator sets on every trial container; a template may not set them.
RESERVED_ENV = frozenset(
    {
        contract.STORAGE_URL,
        contract.STUDY_NAME,
        contract.TRIAL_NUMBER,
        contract.TRIAL_PARAMS,
        contract.OBJECTIVE,
        contract.PRUNER,
        contract.TRAINER,
        contract.TRIAL_ATTEMPT,
        contract.OUTPUT_DIR,
        contract.RUN_NAME,
    }
)


@dataclass(frozen=True)
class FieldIssue:
    """One problem with a spec: the field's path (``spec.searchSpace[1].low``) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """The spec is invalid; ``issues`` lists every problem found, ``field`` is the first one's path."""

    def __init__(self, issues: Sequence[FieldIssue]) -> None:
        if not issues:
            raise ValueError("SpecError needs at least one issue")
        self.issues = tuple(issues)
        super().__init__("; ".join(str(i) for i in self.issues))

    @property
    def field(self) -> str:
        return self.issues[0].path

    @classmethod
    def at(cls, path: str, message: str) -> SpecError:
        return cls([FieldIssue(path, message)])


# ---------------------------------------------------------------------------------------------- models


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


Number = Annotated[int | float, BeforeValidator(_number)]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=False,
    )


class Objective(_Model):
    """One objective: the metric the trial reports and whether to maximize or minimize it."""

    metric: StrictStr = Field(min_length=1, max_length=MAX_METRIC_LENGTH)
    direction: Literal["maximize", "minimize"] = "maximize"


class Param(_Model):
    """One search-space parameter: int, float (optionally log or stepped) or categorical."""

    name: StrictStr = Field(min_length=1, max_length=MAX_PARAM_NAME_LENGTH)
    type: Literal["int", "float", "categorical"]
    low: Number | None = None
    high: Number | None = None
    step: Number | None = None
    log: StrictBool = False
    choices: Annotated[tuple[Any, ...], Field(max_length=MAX_CHOICES)] | None = None


class Trials(_Model):
    """The trial budget: how many Optuna trials, how many at once, how many may fail, retries each."""

    total: StrictInt = Field(default=10, ge=1)
    parallelism: StrictInt = Field(default=1, ge=1)
    max_failed: StrictInt = Field(default=3, ge=0)
    retries: StrictInt = Field(default=0, ge=0, le=MAX_RETRIES)
    # How many trials may share one GPU (on a cluster through shared DRA ResourceClaims, see
    # hpo_operator.core.claims; locally as processes pinned with CUDA_VISIBLE_DEVICES).
    per_gpu: StrictInt = Field(default=1, ge=1, le=MAX_PER_GPU, alias="perGPU")


class Sampler(_Model):
    type: Literal["TPE", "Random", "CMAES", "Grid", "QMC", "NSGAII", "GP", "NSGAIII", "BruteForce"] = "TPE"
    seed: StrictInt | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class Pruner(_Model):
    type: Literal[
        "None", "Median", "Percentile", "SuccessiveHalving", "Hyperband", "Wilcoxon", "Threshold", "Patient"
    ] = "None"
    n_startup_trials: StrictInt | None = Field(default=None, ge=0)
    n_warmup_steps: StrictInt | None = Field(default=None, ge=0)
    interval_steps: StrictInt | None = Field(default=None, ge=1)
    n_min_trials: StrictInt | None = Field(default=None, ge=1)
    percentile: Number | None = None
    min_resource: StrictInt | None = Field(default=None, ge=1)
    max_resource: StrictInt | None = Field(default=None, ge=1)
    reduction_factor: StrictInt | None = Field(default=None, ge=2)
    min_early_stopping_rate: StrictInt | None = Field(default=None, ge=0)
    # Wilcoxon
    p_threshold: Number | None = None
    n_startup_steps: StrictInt | None = Field(default=None, ge=0)
    # Threshold (with nWarmupSteps and intervalSteps)
    lower: Number | None = None
    upper: Number | None = None
    # Patient: the pruner it wraps (any type but Patient), how many steps without improvement it
    # tolerates, and by how much a value must improve to count.
    wrapped_pruner: Pruner | None = None
    patience: StrictInt | None = Field(default=None, ge=0)
    min_delta: Number | None = None

    def config(self) -> dict[str, Any]:
        """The ``HPO_PRUNER`` JSON object: the spec's own field names, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True)


class SecretRef(_Model):
    name: StrictStr = Field(min_length=1)
    key: StrictStr = Field(default="url", min_length=1)


class Storage(_Model):
    secret_ref: SecretRef | None = None
    delete_study_on_delete: StrictBool = False


LabelValue = Annotated[StrictStr, Field(max_length=MAX_LABEL_VALUE_LENGTH)]


class PodMetadata(_Model):
    """Labels and annotations added to every trial pod (the operator's own keys cannot be set)."""

    labels: dict[str, LabelValue] = Field(default_factory=dict)
    annotations: dict[str, StrictStr] = Field(default_factory=dict)


class NameRef(_Model):
    """A reference by name: an image pull Secret, a scheduling gate."""

    name: StrictStr = Field(min_length=1)


class PodResourceClaim(_Model):
    """A pod-level resource claim (Kubernetes PodResourceClaim): a name the container's
    ``resources.claims`` refer to, and exactly one of a ResourceClaim or a ResourceClaimTemplate."""

    name: StrictStr = Field(min_length=1)
    resource_claim_name: Annotated[StrictStr, Field(min_length=1)] | None = None
    resource_claim_template_name: Annotated[StrictStr, Field(min_length=1)] | None = None


class DriverConfig(_Model):
    """Opaque configuration for the DRA driver (time-slicing, MPS, ...), passed through into each claim."""

    driver: StrictStr = Field(min_length=1, max_length=253)
    parameters: dict[str, Any] = Field(default_factory=dict)


class Gpu(_Model):
    """How trials get their GPU through Dynamic Resource Allocation (``resource.k8s.io/v1``)."""

    device_class_name: Annotated[StrictStr, Field(min_length=1, max_length=253)] | None = None
    driver_config: DriverConfig | None = None


class Template(_Model):
    """The trial pod's shape. Kubernetes sub-objects (env, resources, ...) are plain dicts."""

    metadata: PodMetadata = Field(default_factory=PodMetadata)

    image: Annotated[StrictStr, Field(min_length=1)] | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: tuple[StrictStr, ...] | None = None
    args: tuple[StrictStr, ...] | None = None
    env: tuple[dict[str, Any], ...] = Field(default=(), max_length=MAX_ENV)
    resources: dict[str, Any] | None = None
    node_selector: dict[str, StrictStr] = Field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] | None = None
    volumes: tuple[dict[str, Any], ...] = ()
    volume_mounts: tuple[dict[str, Any], ...] = ()
    service_account_name: StrictStr | None = None
    priority_class_name: StrictStr | None = None
    output_dir: StrictStr | None = None
    image_pull_secrets: tuple[NameRef, ...] = ()
    scheduler_name: Annotated[StrictStr, Field(min_length=1)] | None = None
    runtime_class_name: Annotated[StrictStr, Field(min_length=1)] | None = None
    security_context: dict[str, Any] | None = None  # the pod's (Kubernetes PodSecurityContext)
    resource_claims: tuple[PodResourceClaim, ...] = ()
    # Gates the pod is created with (Kubernetes PodSchedulingGate); it is not scheduled until each is
    # removed, by whoever owns it (Kueue adds and removes its own, kueue.x-k8s.io/admission).
    scheduling_gates: tuple[NameRef, ...] = ()


class StudySpec(_Model):
    """``HPOStudy.spec``: what to optimize, over which space, with which budget, sampler and pruner."""

    objective: tuple[Objective, ...] = Field(min_length=1, max_length=MAX_OBJECTIVES)
    search_space: tuple[Param, ...] = Field(min_length=1, max_length=MAX_PARAMS)
    trials: Trials = Field(default_factory=Trials)
    sampler: Sampler = Field(default_factory=Sampler)
    pruner: Pruner = Field(default_factory=Pruner)
    enqueue: tuple[dict[str, Any], ...] = Field(default=(), max_length=MAX_ENQUEUED)
    storage: Storage | None = None
    trainer: dict[str, Any] | None = None
    template: Template = Field(default_factory=Template)
    gpu: Gpu | None = None
    # Suspended: nothing is asked and no pod is started; what happens to running trials is onSuspend's:
    # Finish lets them finish, Stop deletes their pods and runs the same trials again on resume.
    suspend: StrictBool = False
    on_suspend: Literal["Finish", "Stop"] = "Finish"
    # A Kueue LocalQueue: trial pods carry Kueue's queue label, so Kueue admits them (plain-Pod integration).
    queue_name: Annotated[StrictStr, Field(max_length=MAX_LABEL_VALUE_LENGTH)] | None = None

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(o.direction for o in self.objective)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(o.metric for o in self.objective)

    @property
    def multi_objective(self) -> bool:
        return len(self.objective) > 1

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.search_space)

    @property
    def delete_study_on_delete(self) -> bool:
        return self.storage is not None and self.storage.delete_study_on_delete

    def param_index(self, name: str) -> int:
        return self.param_names.index(name)

    @property
    def gpu_claims(self) -> bool:
        """Whether trial pods get their GPU from shared DRA ResourceClaims (``perGPU`` > 1 or
        ``spec.gpu`` given) rather than the device plugin's ``nvidia.com/gpu`` limit."""
        return self.trials.per_gpu > 1 or self.gpu is not None


# ------------------------------------------------------------------------------------------- parsing


def parse_fields(raw: Mapping[str, Any] | None) -> StudySpec:
    """``HPOStudy.spec`` (a plain dict, as the API server or YAML gives it) → :class:`StudySpec`, every
    field checked but not yet against the sampler: call :func:`hpo_operator.core.parse.parse_spec`.

    Raises :class:`SpecError` listing every problem with the field path of each.
    """
    if raw is None:
        raise SpecError.at("spec", "required")
    if not isinstance(raw, Mapping):
        raise SpecError.at("spec", f"must be an object, got {type(raw).__name__}")
    try:
        spec = StudySpec.model_validate(dict(raw))
    except ValidationError as e:
        raise SpecError(_issues_from_pydantic(e)) from None
    issues = [*_check_objectives(spec), *_check_search_space(spec), *_check_trials(spec)]
    issues += _check_pruner(spec)
    issues += _check_template(spec)
    issues += _check_pod_policy(spec)
    issues += _check_gpu(spec)
    # One message per problem: a field refused above is not refused again, in the recipe's words.
    said = {i.path for i in issues}
    issues += [i for i in _check_trainer(spec) if i.path not in said]
    if issues:
        raise SpecError(issues)
    return spec


def validate_name(name: str) -> None:
    """HPOStudy names are limited so that trial pod names (``<name>-trial-<n>-r<a>``) fit 63 characters."""
    if len(name) > MAX_STUDY_NAME_LENGTH:
        raise SpecError.at(
            "metadata.name",
            f"must be at most {MAX_STUDY_NAME_LENGTH} characters (trial pods are named "
            f"<name>-trial-<number>), got {len(name)}",
        )


def check_runtime(spec: StudySpec, *, default_image: str | None, default_storage: bool) -> None:
    """What the spec needs from the operator's configuration: a trial image and a storage."""
    if not spec.template.image and not default_image:
        raise SpecError.at(
            "spec.template.image",
            "required: the operator has no default trial image (HPO_TRIAL_IMAGE is not set)",
        )
    if (spec.storage is None or spec.storage.secret_ref is None) and not default_storage:
        raise SpecError.at(
            "spec.storage.secretRef",
            "required: the operator has no default storage (HPO_DEFAULT_STORAGE_URL is not set)",
        )
    check_model_volume(spec)


def check_model_volume(spec: StudySpec) -> None:
    """On a cluster, ``trainer.saveModel`` must be on a volume the template mounts: a trial pod's own
    filesystem goes with the pod, and with it the model (``hpo run`` saves to a local directory)."""
    if spec.template.command is not None or not spec.trainer:
        return
    raw = spec.trainer.get("saveModel")
    save = {"path": raw} if isinstance(raw, str) else raw
    if not isinstance(save, Mapping) or save.get("mode", "all") == "none" or not save.get("path"):
        return
    path = str(save["path"])
    field = "spec.trainer.saveModel" if isinstance(raw, str) else "spec.trainer.saveModel.path"
    if not path.startswith("/"):
        if not spec.template.output_dir:
            raise SpecError.at(
                field,
                f"{path!r} is relative to the trial's output directory, and spec.template.outputDir is not "
                "set: give an absolute path on a volume the template mounts, or set outputDir to one",
            )
        path = f"{spec.template.output_dir.rstrip('/')}/{path}"
    mounts = [str(m.get("mountPath", "")).rstrip("/") for m in spec.template.volume_mounts]
    under = [
        (len(m), mount)
        for m, mount in zip(mounts, spec.template.volume_mounts, strict=True)
        if m and (path == m or path.startswith(m + "/"))
    ]
    if not under:
        shown = ", ".join(m for m in mounts if m) or "none"
        raise SpecError.at(
            field,
            f"{path!r} is not on a volume the template mounts (spec.template.volumeMounts: {shown}); "
            "the model would be lost with the trial's pod",
        )
    mount = max(under, key=lambda x: x[0])[1]
    volume = next((v for v in spec.template.volumes if v.get("name") == mount.get("name")), {})
    kind = next((k for k in _POD_LIFETIME_VOLUMES if k in volume), None)
    if kind is not None:
        raise SpecError.at(
            field,
            f"{path!r} is on the {kind} volume {mount.get('name')!r}, which is deleted with the trial's pod; "
            "use a volume that outlives it (a persistentVolumeClaim, for example)",
        )


# Volumes that live and die with their pod (or are read-only): no place for a model kept after the trial.
_POD_LIFETIME_VOLUMES = ("emptyDir", "ephemeral", "configMap", "secret", "downwardAPI", "projected")


def _path(loc: Sequence[int | str]) -> str:
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _issues_from_pydantic(error: ValidationError) -> list[FieldIssue]:
    issues = []
    errors = error.errors(include_url=False)
    for e in errors:
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        kind = e["type"]
        if kind == "too_short" and any(
            len(o["loc"]) > len(e["loc"]) and o["loc"][: len(e["loc"])] == e["loc"] for o in errors
        ):
            continue  # a list whose items failed is "too short" after validation: the items say why
        issues.append(FieldIssue(_path(loc), trainer_spec.pydantic_message(e, StudySpec)))
    return issues


def _check_objectives(spec: StudySpec) -> list[FieldIssue]:
    issues = []
    seen: set[str] = set()
    for i, o in enumerate(spec.objective):
        if o.metric in seen:
            issues.append(FieldIssue(f"spec.objective[{i}].metric", f"{o.metric!r} is listed twice"))
        seen.add(o.metric)
    return issues


def _check_search_space(spec: StudySpec) -> list[FieldIssue]:
    issues: list[FieldIssue] = []
    seen: set[str] = set()
    for i, p in enumerate(spec.search_space):
        at = f"spec.searchSpace[{i}]"

        def bad(field: str, message: str, at: str = at) -> None:
            issues.append(FieldIssue(f"{at}.{field}" if field else at, message))

        if not PARAM_NAME.match(p.name):
            bad("name", f"{p.name!r} is not a parameter name (a training argument or loss.<argument>)")
        if p.name in seen:
            bad("name", f"{p.name!r} is listed twice")
        seen.add(p.name)
        if p.type == "categorical":
            for field in ("low", "high", "step"):
                if getattr(p, field) is not None:
                    bad(field, "not allowed for a categorical parameter (give choices)")
            if p.log:
                bad("log", "not allowed for a categorical parameter")
            if not p.choices:
                bad("choices", "a categorical parameter needs at least one choice")
                continue
            kept: list[Any] = []
            for j, c in enumerate(p.choices):
                if c is not None and not isinstance(c, str | int | float | bool):
                    bad(f"choices[{j}]", f"must be a string, number, boolean or null, got {c!r}")
                elif any(type(c) is type(k) and c == k for k in kept):
                    bad(f"choices[{j}]", f"{c!r} is listed twice")
                kept.append(c)
            continue
        if p.choices is not None:
            bad("choices", f"only categorical parameters have choices (this one is {p.type})")
        if p.low is None:
            bad("low", f"required for an {p.type} parameter" if p.type == "int" else "required")
        if p.high is None:
            bad("high", "required")
        if p.low is None or p.high is None:
            continue
        if p.type == "int":
            for field in ("low", "high", "step"):
                v = getattr(p, field)
                if v is not None and float(v) != int(v):
                    bad(field, f"must be a whole number for an int parameter, got {v!r}")
        if not p.low < p.high:
            bad("low", f"must be less than high ({p.low!r} >= {p.high!r})")
        if p.log:
            if p.low <= 0:
                bad("low", f"must be greater than 0 when log is true, got {p.low!r}")
            if p.step is not None:
                bad("step", "not allowed when log is true")
        if p.step is not None and p.step <= 0:
            bad("step", f"must be greater than 0, got {p.step!r}")
        elif p.step is not None and p.low < p.high and _decimal(p.step) > _decimal(p.high) - _decimal(p.low):
            as_type = int if p.type == "int" else float  # a float's 0 (JSON's 0.0) is said 0.0
            low, high, step = as_type(p.low), as_type(p.high), as_type(p.step)
            width = as_type(_decimal(p.high) - _decimal(p.low))
            bad(
                "step",
                f"{step!r} is larger than the range [{low!r}, {high!r}] ({width!r} wide): Optuna would "
                f"narrow it to the single value {low!r} and never search it; make step at most {width!r}",
            )
    return issues


def _decimal(value: float) -> Decimal:
    """A spec number as written (``0.1`` is 0.1, not the float nearest it): ranges and steps compare
    exactly, as Optuna compares them."""
    return Decimal(str(value))


def _check_trials(spec: StudySpec) -> list[FieldIssue]:
    issues = []
    if len(spec.enqueue) > spec.trials.total:
        issues.append(
            FieldIssue(
                "spec.enqueue",
                f"{len(spec.enqueue)} parameter sets but spec.trials.total is {spec.trials.total}",
            )
        )
    return issues


def _check_pruner(spec: StudySpec) -> list[FieldIssue]:
    from hpo_trial.pruners import build_pruner  # optuna only; the trial side builds the same pruner

    pruner = spec.pruner
    if pruner.type != "None" and spec.multi_objective:
        return [
            FieldIssue(
                "spec.pruner.type",
                f"{pruner.type} cannot be used: Optuna prunes single-objective studies only "
                f"(this study has {len(spec.objective)} objectives)",
            )
        ]
    issues = _pruner_bounds(pruner, "spec.pruner")
    if pruner.wrapped_pruner is not None:
        issues += _pruner_bounds(pruner.wrapped_pruner, "spec.pruner.wrappedPruner")
    if issues:
        return issues[:1]
    try:
        build_pruner(pruner.config())
    except (ValueError, TypeError) as e:
        return [_pruner_issue(str(e))]
    return []


def _pruner_bounds(pruner: Pruner, at: str) -> list[FieldIssue]:
    """The bounds of the pruner's number fields that the schema states but pydantic does not check."""
    if pruner.percentile is not None and not 0 <= pruner.percentile <= 100:
        return [FieldIssue(f"{at}.percentile", f"must be between 0 and 100, got {pruner.percentile!r}")]
    if pruner.p_threshold is not None and not 0 <= pruner.p_threshold <= 1:
        return [FieldIssue(f"{at}.pThreshold", f"must be between 0 and 1, got {pruner.p_threshold!r}")]
    if pruner.min_delta is not None and pruner.min_delta < 0:
        return [FieldIssue(f"{at}.minDelta", f"must be 0 or more, got {pruner.min_delta!r}")]
    if (
        pruner.min_resource is not None
        and pruner.max_resource is not None
        and pruner.min_resource > pruner.max_resource
    ):
        return [
            FieldIssue(
                f"{at}.minResource",
                f"must not exceed maxResource ({pruner.min_resource} > {pruner.max_resource})",
            )
        ]
    return []


def _check_template(spec: StudySpec) -> list[FieldIssue]:
    issues = []
    t = spec.template
    for i, env in enumerate(t.env):
        name = env.get("name")
        if not isinstance(name, str) or not name:
            issues.append(FieldIssue(f"spec.template.env[{i}].name", "required"))
        elif name in RESERVED_ENV:
            issues.append(
                FieldIssue(
                    f"spec.template.env[{i}].name",
                    f"{name} is part of the trial contract and set by the operator",
                )
            )
    if t.command is not None and not t.command:
        issues.append(
            FieldIssue("spec.template.command", "must not be empty (leave it out for the built-in runner)")
        )
    for field, items, required in (
        ("volumes", t.volumes, ("name",)),
        ("volumeMounts", t.volume_mounts, ("name", "mountPath")),
    ):
        for i, item in enumerate(items):
            for key in required:
                if not isinstance(item.get(key), str):
                    issues.append(FieldIssue(f"spec.template.{field}[{i}].{key}", "required"))
    if t.resources is not None:
        for section, quantities in t.resources.items():
            if section not in ("limits", "requests", "claims"):
                issues.append(FieldIssue(f"spec.template.resources.{section}", "unknown field"))
            elif section != "claims" and not isinstance(quantities, Mapping):
                issues.append(FieldIssue(f"spec.template.resources.{section}", "must be an object"))
            elif section != "claims":
                if len(quantities) > MAX_RESOURCES:
                    issues.append(
                        FieldIssue(
                            f"spec.template.resources.{section}",
                            f"at most {MAX_RESOURCES} resources, got {len(quantities)}",
                        )
                    )
                for resource, quantity in quantities.items():
                    problem = _quantity_problem(quantity)
                    if problem:
                        issues.append(FieldIssue(f"spec.template.resources.{section}.{resource}", problem))
    return issues


def _check_pod_policy(spec: StudySpec) -> list[FieldIssue]:
    """spec.queueName and the template's pod metadata, image pull Secrets, runtime class, security
    context, resource claims and scheduling gates: what the schema cannot say."""
    issues: list[FieldIssue] = []
    t = spec.template
    at = "spec.template"
    if spec.queue_name is not None and not QUEUE_NAME.match(spec.queue_name):
        issues.append(
            FieldIssue(
                "spec.queueName",
                f"{spec.queue_name!r} is not a LocalQueue name (lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit)",
            )
        )
    for kind, keys in (("labels", t.metadata.labels), ("annotations", t.metadata.annotations)):
        if len(keys) > MAX_POD_METADATA:
            issues.append(
                FieldIssue(f"{at}.metadata.{kind}", f"at most {MAX_POD_METADATA} entries, got {len(keys)}")
            )
        for key in keys:
            where = f"{at}.metadata.{kind}.{key}"
            problem = _qualified_name_problem(key)
            if problem:
                issues.append(FieldIssue(where, f"not a valid {kind[:-1]} key: {problem}"))
            elif key.startswith(RESERVED_KEY_PREFIX) or (kind == "labels" and key in RESERVED_LABELS):
                issues.append(FieldIssue(where, _reserved_key_message(kind, key)))
    for key, value in t.metadata.labels.items():
        if not LABEL_VALUE.match(value):
            issues.append(
                FieldIssue(
                    f"{at}.metadata.labels.{key}",
                    f"{value!r} is not a label value (letters, digits, '-', '_' and '.', starting and "
                    "ending with a letter or digit)",
                )
            )
    for field, value in (("runtimeClassName", t.runtime_class_name), ("schedulerName", t.scheduler_name)):
        if value is not None and (len(value) > 253 or not _DNS_SUBDOMAIN.match(value)):
            issues.append(FieldIssue(f"{at}.{field}", f"{value!r} is not an object name (a DNS subdomain)"))
    seen: set[str] = set()
    for i, gate in enumerate(t.scheduling_gates):
        problem = _qualified_name_problem(gate.name)
        if problem:
            issues.append(FieldIssue(f"{at}.schedulingGates[{i}].name", f"not a gate name: {problem}"))
        elif gate.name in seen:
            issues.append(FieldIssue(f"{at}.schedulingGates[{i}].name", f"{gate.name!r} is listed twice"))
        seen.add(gate.name)
    claims: set[str] = set()
    for i, claim in enumerate(t.resource_claims):
        where = f"{at}.resourceClaims[{i}]"
        if claim.name in claims:
            issues.append(FieldIssue(f"{where}.name", f"{claim.name!r} is listed twice"))
        claims.add(claim.name)
        if (claim.resource_claim_name is None) == (claim.resource_claim_template_name is None):
            issues.append(
                FieldIssue(where, "give exactly one of resourceClaimName and resourceClaimTemplateName")
            )
    used = (t.resources or {}).get("claims")
    if isinstance(used, list | tuple):
        for i, ref in enumerate(used):
            name = ref.get("name") if isinstance(ref, Mapping) else None
            if not isinstance(name, str) or not name:
                issues.append(FieldIssue(f"{at}.resources.claims[{i}].name", "required"))
            elif name not in claims:
                issues.append(
                    FieldIssue(
                        f"{at}.resources.claims[{i}].name",
                        f"{name!r} names no entry of spec.template.resourceClaims",
                    )
                )
    return issues


def _reserved_key_message(kind: str, key: str) -> str:
    if key == KUEUE_QUEUE_LABEL:
        return "set from spec.queueName on every trial pod: name the LocalQueue there"
    return (
        f"the operator sets this {kind[:-1]} on every trial pod ({RESERVED_KEY_PREFIX}* "
        f"and app.kubernetes.io/managed-by are its own); choose another key"
    )


def _qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes qualified name (``[prefix/]name``), or ``None``."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"{key!r}: the prefix before '/' must be a DNS subdomain (such as example.com)"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (
            f"{key!r}: the name must be 1 to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def _check_gpu(spec: StudySpec) -> list[FieldIssue]:
    """A study whose trials share GPUs through ResourceClaims takes no device-plugin GPU limit too, and
    no claim of its own under the shared claim's name."""
    resources = spec.template.resources
    if not spec.gpu_claims:
        return []
    why = "the trial pods get their GPU from a shared DRA ResourceClaim ({cause}); remove this {what}"
    cause = f"spec.trials.perGPU is {spec.trials.per_gpu}" if spec.trials.per_gpu > 1 else "spec.gpu is set"
    issues = []
    for section in ("limits", "requests"):
        quantities = resources.get(section) if isinstance(resources, Mapping) else None
        if isinstance(quantities, Mapping) and GPU_RESOURCE in quantities:
            issues.append(
                FieldIssue(
                    f"spec.template.resources.{section}.{GPU_RESOURCE}",
                    why.format(cause=cause, what="device-plugin " + section.rstrip("s")),
                )
            )
    for i, claim in enumerate(spec.template.resource_claims):
        if claim.name == GPU_CLAIM:
            issues.append(
                FieldIssue(
                    f"spec.template.resourceClaims[{i}].name",
                    f"{GPU_CLAIM!r} is the name of the shared GPU claim the operator adds ({cause}); "
                    "choose another name",
                )
            )
    return issues


def _quantity_problem(value: Any) -> str | None:
    """Why ``value`` is not a Kubernetes quantity (an integer, or a string such as 500m or 16Gi)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 0 else f"{value!r} is negative; a resource quantity must be 0 or more"
    if not isinstance(value, str):
        return f"must be a quantity (an integer or a string such as 500m or 16Gi), got {value!r}"
    if value.startswith("-") and QUANTITY.match(value[1:]):
        return f"{value!r} is negative; a resource quantity must be 0 or more"
    if not QUANTITY.match(value):
        return f"{value!r} is not a quantity (such as 2, 500m or 16Gi)"
    return None


def _check_trainer(spec: StudySpec) -> list[FieldIssue]:
    """The built-in runner's recipe, when the template does not bring its own command."""
    if spec.template.command is not None:
        return []
    if not spec.trainer:
        return [
            FieldIssue(
                "spec.trainer",
                "required when spec.template.command is not set (the built-in runner needs a recipe)",
            )
        ]
    try:
        # Parsed once; each check takes the parsed recipe.
        recipe = trainer_spec.validate_trainer(dict(spec.trainer))
        # Names, and the types, bounds and choices of parameters that set a simply typed argument
        # (a float parameter for an int argument, a choice that is no scheduler name, ...).
        trainer_spec.validate_search_space(recipe, [p.model_dump() for p in spec.search_space])
        # The pruner compares trials at equal steps: refuse a recipe whose reports never line up,
        # at apply time rather than at the first trial (Optuna prunes single-objective studies only).
        if not spec.multi_objective:
            trainer_spec.check_pruning(recipe, spec.pruner.config())
        # An objective metric the recipe's evaluator cannot log (where its names are known).
        trainer_spec.check_objective_metrics(recipe, [o.metric for o in spec.objective])
    except trainer_spec.TrainerSpecError as e:
        # Each issue names its field as data (``trainer.loss.name``, ``searchSpace[2].type``).
        return [FieldIssue(f"spec.{issue.path}", issue.message) for issue in e.issues]
    return []


def _pruner_issue(text: str) -> FieldIssue:
    """``hpo_trial.pruners``' message (``"pruner.maxResource is required ..."``) as a :class:`FieldIssue`
    naming the field its first word names, else ``spec.pruner``. (Its errors are plain ``ValueError``s;
    the recipe's carry their paths as data, :class:`hpo_trial.trainer_spec.TrainerSpecError`.)"""
    head, _, rest = text.partition(" ")
    field = head.removesuffix(":")
    if rest and (field.startswith("pruner.") or (field == "pruner" and head.endswith(":"))):
        return FieldIssue(f"spec.{field}", rest)
    return FieldIssue("spec.pruner", text)
