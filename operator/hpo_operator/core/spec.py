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
# A Kubernetes resource quantity (the CRD's pattern, Kubernetes' own): 2, 500m, 16Gi, 1e3.
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


class Template(_Model):
    """The trial pod's shape. Kubernetes sub-objects (env, resources, ...) are plain dicts."""

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
    # Suspended: nothing is asked and no pod is started; what happens to running trials is onSuspend's:
    # Finish lets them finish, Stop deletes their pods and runs the same trials again on resume.
    suspend: StrictBool = False
    on_suspend: Literal["Finish", "Stop"] = "Finish"

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
    issues += _check_trainer(spec)
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
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "required"
        elif kind == "too_long":
            ctx = e.get("ctx") or {}
            message = f"at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
        elif kind in ("literal_error", "enum"):
            message = f"{e['msg'][0].lower()}{e['msg'][1:]}, got {e['input']!r}"
        else:
            message = e["msg"].removeprefix("Value error, ")
            message = message[0].lower() + message[1:] if message else message
        issues.append(FieldIssue(_path(loc), message))
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
    return issues


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
                for resource, quantity in quantities.items():
                    problem = _quantity_problem(quantity)
                    if problem:
                        issues.append(FieldIssue(f"spec.template.resources.{section}.{resource}", problem))
    return issues


def _quantity_problem(value: Any) -> str | None:
    """Why ``value`` is not a Kubernetes quantity (an integer, or a string such as 500m or 16Gi)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    if not isinstance(value, str):
        return f"must be a quantity (an integer or a string such as 500m or 16Gi), got {value!r}"
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
