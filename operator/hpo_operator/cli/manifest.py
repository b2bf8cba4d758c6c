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
from hpo_trial import trainer_spec

from hpo_operator.core import names, search_space
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError, StudySpec, validate_name

# Kubernetes object names (RFC 1123 subdomain), as the API server checks metadata.name.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LOCAL_PREFIX = "local"


class ManifestError(Exception):
    """The manifest cannot be used; ``str()`` is the message to show, naming the file and the field."""


class MissingFile(ManifestError):
    """A file the trials read is not on this machine (:func:`check_local_files`)."""


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


@dataclass(frozen=True)
class LocalFile:
    """A file a trial reads, named in the manifest by a path on this machine."""

    field: str  # spec.trainer.train.files[0]
    value: str  # as written
    path: Path  # where a trial started by ``hpo run`` (in the manifest's directory) looks for it
    found: bool


_PYTHON = re.compile(r"^(.*/)?python(\d+(\.\d+)?)?$")


def _file_fields(m: Manifest) -> dict[str, str]:
    """The manifest's paths to files a trial reads: a recipe's data files (train, eval, the evaluators'
    datasets), its model when given as a local path, and a custom command's script."""
    found: dict[str, str] = {}

    def dataset(d: Any, field: str) -> None:
        if not isinstance(d, Mapping):
            return
        files = d.get("files")
        for j, f in enumerate([files] if isinstance(files, str) else files or []):
            if isinstance(f, str):
                found[f"{field}.files" + ("" if isinstance(files, str) else f"[{j}]")] = f

    def evaluator(e: Any, field: str) -> None:
        if not isinstance(e, Mapping):
            return
        dataset(e.get("dataset"), f"{field}.dataset")
        for j, inner in enumerate(e.get("evaluators") or []):
            evaluator(inner, f"{field}.evaluators[{j}]")

    t = m.spec.template
    if t.command is None:
        trainer = m.spec.trainer or {}
        model = trainer.get("model")
        if isinstance(model, str) and model.startswith(("/", "./", "../", "~")):
            found["spec.trainer.model"] = model
        dataset(trainer.get("train"), "spec.trainer.train")
        dataset(trainer.get("eval"), "spec.trainer.eval")
        evaluator(trainer.get("evaluator"), "spec.trainer.evaluator")
    else:
        argv = [*t.command, *(t.args or ())]
        fields = [f"spec.template.command[{j}]" for j in range(len(t.command))]
        fields += [f"spec.template.args[{j}]" for j in range(len(t.args or ()))]
        if argv and argv[0].startswith(("./", "../")):
            found[fields[0]] = argv[0]
        if len(argv) > 1 and _PYTHON.match(argv[0]) and argv[1].endswith(".py"):
            found[fields[1]] = argv[1]
    return found


def local_files(m: Manifest) -> list[LocalFile]:
    """The files a trial reads from this machine's disk (:func:`_file_fields`), and whether each is there.

    Paths on one of the pod's volumes (under a ``mountPath``) are left to ``hpo run``'s volume handling,
    URLs to the library that reads them; a glob pattern is found if it matches a file.
    """
    import glob
    import posixpath

    mounts = [posixpath.normpath(str(vm.get("mountPath"))) for vm in m.spec.template.volume_mounts]
    out = []
    for key, value in _file_fields(m).items():
        if "://" in value or any(value == p or value.startswith(p.rstrip("/") + "/") for p in mounts):
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else m.dir / path
        found = bool(glob.glob(str(path))) if glob.has_magic(str(path)) else path.exists()
        out.append(LocalFile(key, value, path, found))
    return out


def check_local_files(m: Manifest) -> None:
    """Raise :class:`MissingFile` naming the first file a trial would not find on this machine."""
    for f in local_files(m):
        if not f.found:
            relative = (
                ""
                if Path(f.value).expanduser().is_absolute()
                else f" in {m.dir} (where hpo run starts trials)"
            )
            raise MissingFile(f"{m.path}: {f.field}: no such file: {f.value}{relative}")


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def summary(m: Manifest, files: list[LocalFile] | None = None) -> str:
    """A valid manifest in a few short lines: objectives, parameters, budget, sampler, pruner, what runs,
    and the local files it reads (``files``, if checked)."""
    s = m.spec
    t = s.trials
    sampler = s.sampler.type + (f" (seed {s.sampler.seed})" if s.sampler.seed is not None else "")
    pruner = "none" if s.pruner.type == "None" else s.pruner.type
    if s.template.command is not None:
        runs = "the command " + " ".join([*s.template.command, *(s.template.args or ())])
    else:
        runs = f"the built-in runner, model {(s.trainer or {}).get('model', '?')}"
    budget = f"{t.total}, {min(t.parallelism, t.total)} at a time"
    if s.enqueue:
        budget += f", {len(s.enqueue)} enqueued first"
    retries = "no retry" if t.retries == 0 else f"{_count(t.retries, 'retry', 'retries')} a trial"
    failure = f"{retries}; the study fails after {_count(t.max_failed + 1, 'failed trial')}"
    rows = [
        (
            "objective" if len(s.objective) == 1 else "objectives",
            ", ".join(f"{o.direction} {o.metric}" for o in s.objective),
        ),
        ("parameters", f"{len(s.search_space)}: {', '.join(s.param_names)}"),
        ("trials", budget),
        ("on failure", failure),
        ("sampler", sampler),
        ("pruner", pruner),
        ("runs", runs),
    ]
    if s.template.command is None and s.trainer:
        save = trainer_spec.validate_trainer(dict(s.trainer), known_arguments=None).save_model
        if save is not None:
            rows.append(("models", _kept_models(save)))
    if files:
        rows.append(("local files", ", ".join(f.value for f in files) + " (found)"))
    import textwrap

    width = max(len(k) for k, _ in rows)
    indent = " " * (width + 4)
    lines = [f"{m.name}: a valid {names.KIND}"]
    for k, v in rows:  # a long value continues under itself, at 80 columns (never inside a name)
        lines += textwrap.wrap(
            v, 80, initial_indent=f"  {k.ljust(width)}  ", subsequent_indent=indent, break_long_words=False
        )
    return "\n".join([*lines, *note_lines(s)])


def _kept_models(save: trainer_spec.SaveModelSpec) -> str:
    """``trainer.saveModel`` in words: which trials' models are kept, and where."""
    if save.mode == "none":
        return "none saved"
    relative = " (relative to template.outputDir, else the trial's working directory)"
    where = f"under {save.path}" + ("" if save.path.startswith("/") else relative)
    if save.mode == "best":
        return f"the best trial's only (hpo export copies it), {where}"
    return f"every completed trial's, {where}"


def note_lines(spec: StudySpec) -> list[str]:
    """What the study will not do as written, one ``Note: <field>: <message>`` line each: the operator's
    SearchSpaceAsWritten and SamplerFitsSpace conditions (:func:`hpo_operator.core.search_space.notes`),
    and a parallelism above the budget (at most ``total`` trials run at once)."""
    t = spec.trials
    lines = [f"Note: {n}" for n in search_space.notes(spec)]
    if t.parallelism > t.total:
        lines.append(
            f"Note: spec.trials.parallelism: {t.parallelism} is more than the {t.total} trials of "
            f"spec.trials.total: at most {t.total} run at once"
        )
    return lines
