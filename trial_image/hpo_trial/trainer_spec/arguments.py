"""Training arguments: the type of a loss's, an evaluator's or the trainer's keyword argument (:class:`Arg`),
the table of ``SentenceTransformerTrainingArguments`` fields (:data:`TRAINING_ARGUMENTS`), and the checks of
one training argument by name and value."""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Literal

from hpo_trial.trainer_spec.errors import suggest

_UNSET: Any = object()


ArgKind = Literal["float", "int", "bool", "str", "choice", "int_list", "float_list", "str_list"]


@dataclass(frozen=True)
class Arg:
    """One keyword argument of a loss or evaluator, as a recipe may give it (JSON values only)."""

    kind: ArgKind
    choices: tuple[str, ...] = ()
    required: bool = False
    nullable: bool = False  # null (None) is a value too

    @property
    def tunable(self) -> bool:
        """Whether a search-space parameter (``loss.<name>``) may set it."""
        return self.kind in ("float", "int", "bool", "choice")

    def check(self, value: Any) -> str | None:
        """None when ``value`` fits, else what is wrong with it."""
        kind = self.kind
        if value is None and self.nullable:
            return None
        if kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return None if ok else f"must be a number, got {value!r}"
        if kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
            return None if ok else f"must be an integer, got {value!r}"
        if kind == "bool":
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if kind == "str":
            return None if isinstance(value, str) else f"must be a string, got {value!r}"
        if kind == "choice":
            if value not in self.choices:
                return f"must be one of {', '.join(self.choices)}; got {value!r}"
            return None
        if not isinstance(value, list) or not value:
            return f"must be a non-empty list, got {value!r}"
        item = {"int_list": Arg("int"), "float_list": Arg("float"), "str_list": Arg("str")}[kind]
        if self.choices:
            item = Arg("choice", self.choices)
        for i, v in enumerate(value):
            problem = item.check(v)
            if problem:
                return f"item {i} {problem}"
        return None


# Every ``SentenceTransformerTrainingArguments`` field (``__init__`` arguments), with its type where the
# type is simple: a bool, int, float or str, or one of an enum's values (fields typed ``SomeEnum | str``),
# optionally null. ``None``: a field whose type is not simple (dicts, lists, unions of those); only its
# name is checked here, the library checks its value when the trial starts. Generated from
# sentence-transformers 6.2.0 / transformers 5.24.0 by the ``classify`` function in
# tests/trial/test_recipe.py; ``test_training_argument_table_matches_the_library`` there fails (and prints
# the table to paste here) when the installed library's fields differ.
TRAINING_ARGUMENTS: Mapping[str, Arg | None] = {
    "output_dir": Arg("str", nullable=True),
    "per_device_train_batch_size": Arg("int"),
    "num_train_epochs": Arg("float"),
    "max_steps": Arg("int"),
    "learning_rate": Arg("float"),
    "lr_scheduler_type": Arg(
        "choice",
        (
            "linear",
            "cosine",
            "cosine_with_restarts",
            "polynomial",
            "constant",
            "constant_with_warmup",
            "inverse_sqrt",
            "reduce_lr_on_plateau",
            "cosine_with_min_lr",
            "cosine_warmup_with_min_lr",
            "warmup_stable_decay",
            "greedy",
        ),
    ),
    "lr_scheduler_kwargs": None,
    "warmup_steps": Arg("float"),
    "optim": Arg(
        "choice",
        (
            "adamw_torch",
            "adamw_torch_fused",
            "adamw_torch_xla",
            "adamw_torch_npu_fused",
            "adafactor",
            "adamw_anyprecision",
            "adamw_torch_4bit",
            "adamw_torch_8bit",
            "ademamix",
            "sgd",
            "adagrad",
            "adamw_bnb_8bit",
            "adamw_8bit",
            "ademamix_8bit",
            "lion_8bit",
            "lion_32bit",
            "paged_adamw_32bit",
            "paged_adamw_8bit",
            "paged_ademamix_32bit",
            "paged_ademamix_8bit",
            "paged_lion_32bit",
            "paged_lion_8bit",
            "rmsprop",
            "rmsprop_bnb",
            "rmsprop_bnb_8bit",
            "rmsprop_bnb_32bit",
            "galore_adamw",
            "galore_adamw_8bit",
            "galore_adafactor",
            "galore_adamw_layerwise",
            "galore_adamw_8bit_layerwise",
            "galore_adafactor_layerwise",
            "lomo",
            "adalomo",
            "grokadamw",
            "schedule_free_radam",
            "schedule_free_adamw",
            "schedule_free_sgd",
            "apollo_adamw",
            "apollo_adamw_layerwise",
            "stable_adamw",
        ),
    ),
    "optim_args": Arg("str", nullable=True),
    "weight_decay": Arg("float"),
    "adam_beta1": Arg("float"),
    "adam_beta2": Arg("float"),
    "adam_epsilon": Arg("float"),
    "optim_target_modules": None,
    "gradient_accumulation_steps": Arg("int"),
    "average_tokens_across_devices": Arg("bool"),
    "max_grad_norm": Arg("float"),
    "label_smoothing_factor": Arg("float"),
    "bf16": Arg("bool"),
    "fp16": Arg("bool"),
    "bf16_full_eval": Arg("bool"),
    "fp16_full_eval": Arg("bool"),
    "tf32": Arg("bool", nullable=True),
    "activation_checkpointing": Arg("bool", nullable=True),
    "activation_checkpointing_kwargs": None,
    "gradient_checkpointing": Arg("bool", nullable=True),
    "gradient_checkpointing_kwargs": None,
    "torch_compile": Arg("bool"),
    "torch_compile_backend": Arg("str", nullable=True),
    "torch_compile_mode": Arg("str", nullable=True),
    "use_liger_kernel": Arg("bool"),
    "liger_kernel_config": None,
    "use_cache": Arg("bool"),
    "neftune_noise_alpha": Arg("float", nullable=True),
    "torch_empty_cache_steps": Arg("int", nullable=True),
    "auto_find_batch_size": Arg("bool"),
    "logging_strategy": Arg("choice", ("no", "steps", "epoch")),
    "logging_steps": Arg("float"),
    "logging_first_step": Arg("bool"),
    "log_on_each_node": Arg("bool"),
    "logging_nan_inf_filter": Arg("bool"),
    "include_num_input_tokens_seen": None,
    "log_level": Arg("str"),
    "log_level_replica": Arg("str"),
    "disable_tqdm": Arg("bool", nullable=True),
    "report_to": None,
    "run_name": Arg("str", nullable=True),
    "project": Arg("str"),
    "trackio_space_id": Arg("str", nullable=True),
    "trackio_bucket_id": Arg("str", nullable=True),
    "trackio_static_space_id": None,
    "eval_strategy": Arg("choice", ("no", "steps", "epoch")),
    "eval_steps": Arg("float", nullable=True),
    "eval_delay": Arg("float"),
    "per_device_eval_batch_size": Arg("int"),
    "prediction_loss_only": Arg("bool"),
    "eval_on_start": Arg("bool"),
    "eval_do_concat_batches": Arg("bool"),
    "eval_use_gather_object": Arg("bool"),
    "eval_accumulation_steps": Arg("int", nullable=True),
    "include_for_metrics": None,
    "batch_eval_metrics": Arg("bool"),
    "save_only_model": Arg("bool"),
    "save_strategy": Arg("choice", ("no", "steps", "epoch", "best")),
    "save_steps": Arg("float"),
    "save_on_each_node": Arg("bool"),
    "save_total_limit": Arg("int", nullable=True),
    "enable_jit_checkpoint": Arg("bool"),
    "push_to_hub": Arg("bool"),
    "hub_token": Arg("str", nullable=True),
    "hub_private_repo": Arg("bool", nullable=True),
    "hub_model_id": Arg("str", nullable=True),
    "hub_strategy": Arg("choice", ("end", "every_save", "checkpoint", "all_checkpoints")),
    "hub_always_push": Arg("bool"),
    "hub_revision": Arg("str", nullable=True),
    "load_best_model_at_end": Arg("bool"),
    "metric_for_best_model": Arg("str", nullable=True),
    "greater_is_better": Arg("bool", nullable=True),
    "ignore_data_skip": Arg("bool"),
    "restore_callback_states_from_checkpoint": Arg("bool"),
    "full_determinism": Arg("bool"),
    "seed": Arg("int"),
    "data_seed": Arg("int", nullable=True),
    "use_cpu": Arg("bool"),
    "accelerator_config": None,
    "parallelism_config": None,
    "dataloader_drop_last": Arg("bool"),
    "dataloader_num_workers": Arg("int"),
    "dataloader_pin_memory": Arg("bool"),
    "dataloader_persistent_workers": Arg("bool"),
    "dataloader_prefetch_factor": Arg("int", nullable=True),
    "dataloader_multiprocessing_context": Arg("str", nullable=True),
    "dataloader_in_order": Arg("bool"),
    "remove_unused_columns": Arg("bool"),
    "label_names": None,
    "train_sampling_strategy": Arg("str"),
    "length_column_name": Arg("str"),
    "ddp_find_unused_parameters": Arg("bool", nullable=True),
    "ddp_bucket_cap_mb": Arg("int", nullable=True),
    "ddp_broadcast_buffers": Arg("bool", nullable=True),
    "ddp_static_graph": Arg("bool", nullable=True),
    "ddp_backend": Arg("str", nullable=True),
    "ddp_timeout": Arg("int"),
    "fsdp": Arg("str", nullable=True),
    "fsdp_config": None,
    "deepspeed": None,
    "debug": None,
    "skip_memory_metrics": Arg("bool"),
    "do_train": Arg("bool"),
    "do_eval": Arg("bool"),
    "do_predict": Arg("bool"),
    "resume_from_checkpoint": Arg("str", nullable=True),
    "local_rank": Arg("int"),
    "prompts": None,
    "batch_sampler": None,
    "multi_dataset_batch_sampler": None,
    "router_mapping": None,
    "learning_rate_mapping": None,
    "warmup_ratio": Arg("float", nullable=True),
}

# The training-argument fields a check knows: a table like :data:`TRAINING_ARGUMENTS` (names and simple
# types), or a set of names only (the installed library's, inside the trial), whose values the library
# itself checks when it builds the arguments.
KnownArguments = Mapping[str, Arg | None] | AbstractSet[str]

# Training arguments the runner sets itself; a recipe or search space may not.
RESERVED_ARGUMENTS = {"output_dir": "it writes under HPO_OUTPUT_DIR, or a temporary directory"}

# What a training-argument name looks like (in ``arguments`` and as a search-space parameter's name).
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def arg_of(name: str, known: KnownArguments) -> Arg | None:
    """The simple type ``known`` gives the field ``name``, or None (no type known: a name-only set)."""
    return known.get(name) if isinstance(known, Mapping) else None


def training_argument_problem(
    name: str,
    value: Any = _UNSET,
    known: KnownArguments = TRAINING_ARGUMENTS,
    owner: str = "SentenceTransformerTrainingArguments",
) -> str | None:
    """None when ``name`` is a ``SentenceTransformerTrainingArguments`` field of ``known`` (default
    :data:`TRAINING_ARGUMENTS`) and ``value`` (when given) fits the type ``known`` gives it (a name-only
    set gives none); else what is wrong."""
    if name not in known:
        return f"not a {owner} field{suggest(name, known)}"
    arg = arg_of(name, known)
    if arg is None or value is _UNSET:
        return None
    return arg.check(value)


def warmup_ratio_problem(name: str, value: Any) -> str | None:
    """``warmup_ratio`` must be below 1: the runner passes it as ``warmup_steps`` (Transformers 5 reads a
    value below 1 as a ratio of the training steps and 1 or more as a number of steps, so 1.0 would be
    one step). None when ``value`` fits (or ``name`` is another field)."""
    if name != "warmup_ratio" or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value >= 1:
        return (
            f"must be below 1, got {value!r} (it becomes warmup_steps, where 1 or more is a number of "
            "steps, not a ratio); for a warmup of whole steps set warmup_steps"
        )
    return None
