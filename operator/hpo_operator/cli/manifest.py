"""An HPOStudy manifest file, read and validated with the operator's own spec parser.

``hpo validate`` and ``hpo run`` give exactly the messages the operator puts in a study's status
(:func:`hpo_operator.core.parse.parse_spec`), prefixed with the file's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpo_operator.core import names
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError, StudySpec, validate_name

# Kubernetes object names (RFC 1123 subdomain), as the API server checks metadata.name.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LOCAL_PREFIX = "local"


class ManifestError(Exception):
    """The manifest cannot be used; ``str()`` is the message to show, naming the file and the field."""


@dataclass(frozen=True)
class Manifest:
    path: Path  # absolute
    name: str
    namespace: str | None
    spec: StudySpec
    raw: Mapping[str, Any]
    # The ConfigMaps in the same file, by name (``hpo run`` writes the ones the trial pod mounts).
    config_maps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def local_study_name(self) -> str:
        """The Optuna study ``hpo run`` uses: the same on every run, so a second run resumes."""
        return f"{LOCAL_PREFIX}.{self.name}"

    @property
    def default_storage_url(self) -> str:
        """The embedded default storage: a SQLite file next to the manifest."""
        return f"sqlite:///{self.dir / (self.path.stem + '.hpo.db')}"

    @property
    def work_dir(self) -> Path:
        """Where ``hpo run`` keeps trial logs and outputs: ``.hpo/<study>/`` next to the manifest."""
        return self.dir / ".hpo" / self.local_study_name


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML (YAML 1.1) reads ``1e-6`` as a string; kubectl and the API server, a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> Mapping[str, Any]:
    """The HPOStudy document of a YAML file (a file may hold other documents; exactly one HPOStudy)."""
    return _study(path, read_documents(path))


def read_documents(path: Path) -> list[Mapping[str, Any]]:
    """Every document of a YAML file, each a Kubernetes object (a mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read: {e.strerror}") from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not valid YAML: {e}") from None
    if not docs:
        raise ManifestError(f"{path}: is empty; expected an HPOStudy manifest")
    for i, d in enumerate(docs):
        if not isinstance(d, Mapping):
            raise ManifestError(f"{path}: document {i + 1} is a {type(d).__name__}, not a Kubernetes object")
    return docs


def _study(path: Path, docs: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    studies = [d for d in docs if d.get("kind") == names.KIND]
    if not studies:
        kinds = ", ".join(repr(d.get("kind")) for d in docs)
        raise ManifestError(f"{path}: kind: no {names.KIND} in this file (found kind {kinds})")
    if len(studies) > 1:
        raise ManifestError(f"{path}: holds {len(studies)} {names.KIND} documents; give one per file")
    return studies[0]


def load_manifest(path: str | Path, trials: Mapping[str, int] | None = None) -> Manifest:
    """Read and validate a manifest; raise :class:`ManifestError` naming the field on any problem.

    ``trials`` overrides fields of ``spec.trials`` (``{"total": 3}``) before validation, so an override
    is checked like the manifest itself.
    """
    p = Path(path).expanduser().resolve()
    docs = read_documents(p)
    doc = _study(p, docs)
    config_maps = {
        str((d.get("metadata") or {}).get("name")): d
        for d in docs
        if d.get("kind") == "ConfigMap" and isinstance(d.get("metadata"), Mapping)
    }
    if trials:
        spec = dict(doc.get("spec") or {}) if isinstance(doc.get("spec"), Mapping) else doc.get("spec")
        if isinstance(spec, dict):
            section = spec.get("trials")
            spec["trials"] = {**(section if isinstance(section, Mapping) else {}), **trials}
            doc = {**doc, "spec": spec}
    api = doc.get("apiVersion")
    if api != names.API_VERSION:
        raise ManifestError(f"{p}: apiVersion: must be {names.API_VERSION}, got {api!r}")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        raise ManifestError(f"{p}: metadata: required (with a name)")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{p}: metadata.name: required")
    if not _DNS_SUBDOMAIN.match(name):
        raise ManifestError(
            f"{p}: metadata.name: {name!r} is not a valid Kubernetes name "
            "(lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)"
        )
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ManifestError(f"{p}: metadata.namespace: must be a string")
    try:
        validate_name(name)
        spec = parse_spec(doc.get("spec"))
    except SpecError as e:
        raise ManifestError(f"{p}: {e}") from None
    return Manifest(path=p, name=name, namespace=namespace, spec=spec, raw=doc, config_maps=config_maps)


def summary(m: Manifest) -> str:
    """One line about a valid manifest: objectives, parameters, budget, sampler, pruner, what runs."""
    s = m.spec
    objectives = ", ".join(f"{o.direction} {o.metric}" for o in s.objective)
    t = s.trials
    sampler = s.sampler.type + (f" (seed {s.sampler.seed})" if s.sampler.seed is not None else "")
    pruner = "no pruner" if s.pruner.type == "None" else f"{s.pruner.type} pruner"
    if s.template.command is not None:
        runs = "command " + " ".join([*s.template.command, *(s.template.args or ())])
    else:
        runs = f"built-in runner ({(s.trainer or {}).get('model', '?')})"
    enqueue = f", {len(s.enqueue)} enqueued" if s.enqueue else ""
    return (
        f"{m.name}: valid {names.KIND}: {objectives}; {len(s.search_space)} parameter(s) "
        f"({', '.join(s.param_names)}); {t.total} trials{enqueue}, parallelism {t.parallelism}, "
        f"retries {t.retries}, maxFailed {t.max_failed}; {sampler} sampler, {pruner}; {runs}"
    )
