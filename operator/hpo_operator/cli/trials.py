"""``hpo trials``: every trial of a study, as a table for people or as JSON, YAML or CSV for programs.

One list of records (:func:`trial_list`) feeds every format, so they say the same:

* a terminal gets a table: the value column named after the metric and its direction, the best trial
  marked (the Pareto front's trials in a multi-objective study), a pruned trial's value in parentheses
  (its last report, not a final value), one column per parameter when they fit the width, else one
  ``name=value`` per line (never cut inside a name or a value);
* a pipe gets plain text: the same columns aligned with spaces, one line per trial, no colour, no
  box-drawing, nothing wrapped (for ``grep``, ``awk``, ``column``);
* ``-o json`` / ``-o yaml`` give :data:`TRIAL_LIST_SCHEMA`; ``-o csv`` one row per trial with the
  metrics and ``params.<name>`` as columns.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hpo_operator.cli.values import fmt_duration, fmt_param
from hpo_operator.core.events import fmt_value

FORMATS = ("table", "json", "yaml", "csv")
STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan", "WAITING": "dim"}

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRING_OR_NULL = {"type": ["string", "null"]}
_INTEGER_OR_NULL = {"type": ["integer", "null"]}

# What `hpo trials -o json` (and -o yaml) writes: a JSON Schema (draft 2020-12).
TRIAL_LIST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "hpo trials -o json",
    "type": "object",
    "required": ["study", "source", "objectives", "parameters", "best", "trials"],
    "additionalProperties": False,
    "properties": {
        "study": {"type": "string", "description": "the Optuna study's name"},
        "source": {
            "type": "object",
            "description": "what was read: a manifest's local study, an HPOStudy on the cluster, a storage",
            "required": ["kind", "name"],
            "additionalProperties": False,
            "properties": {
                "kind": {"enum": ["manifest", "cluster", "storage"]},
                "name": {"type": "string", "description": "the manifest's path, namespace/name, or study"},
            },
        },
        "objectives": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["metric", "direction"],
                "additionalProperties": False,
                "properties": {
                    "metric": {"type": "string"},
                    "direction": {"enum": ["maximize", "minimize"]},
                },
            },
        },
        "parameters": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the parameters' names, in the search space's order",
        },
        "best": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "the best trial's number (the Pareto front's, for several objectives)",
        },
        "trials": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "number",
                    "state",
                    "values",
                    "valueKind",
                    "params",
                    "best",
                    "start",
                    "complete",
                    "durationSeconds",
                    "attempts",
                    "lastStep",
                    "failReason",
                ],
                "additionalProperties": False,
                "properties": {
                    "number": {"type": "integer", "minimum": 0},
                    "state": {"enum": ["RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"]},
                    "values": {
                        "type": ["array", "null"],
                        "items": {"type": "number"},
                        "description": "one per objective, in the objectives' order",
                    },
                    "valueKind": {
                        "enum": ["final", "last-report", None],
                        "description": "final: a COMPLETE trial's result; last-report: a PRUNED trial's last "
                        "intermediate value; null: no value",
                    },
                    "params": {
                        "type": "object",
                        "description": "name → value (string, boolean, integer, number)",
                    },
                    "best": {"type": "boolean"},
                    "start": {**_STRING_OR_NULL, "description": "ISO 8601"},
                    "complete": {**_STRING_OR_NULL, "description": "ISO 8601"},
                    "durationSeconds": _NUMBER_OR_NULL,
                    "attempts": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "runs of this trial (retries + 1)",
                    },
                    "lastStep": {**_INTEGER_OR_NULL, "description": "the last step it reported"},
                    "failReason": _STRING_OR_NULL,
                },
            },
        },
    },
}


def _iso(t: Any) -> str | None:
    """ISO 8601 with the UTC offset (Optuna stores this machine's local time, without one)."""
    return t.astimezone().isoformat() if t is not None else None


def _csv_cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def metric_names(study: optuna.Study, metrics: Sequence[str] | None) -> list[str]:
    from hpo_operator.cli.report import metric_names as names

    return names(study, metrics)


def best_numbers(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[int]:
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return []
    if len(study.directions) == 1:
        return [study.best_trial.number]
    return sorted(t.number for t in study.best_trials)


def param_order(trials: Sequence[FrozenTrial], params: Sequence[str] | None) -> list[str]:
    order = list(params or ())
    for t in trials:
        order += [p for p in t.params if p not in order]
    return order


def _json_value(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)


def trial_list(
    study: optuna.Study,
    *,
    metrics: Sequence[str] | None,
    params: Sequence[str] | None,
    source_kind: str,
    source_name: str,
) -> dict[str, Any]:
    """The study's trials as plain data (:data:`TRIAL_LIST_SCHEMA`)."""
    from hpo_trial.contract import ATTR_ATTEMPTS, ATTR_FAIL_REASON

    trials = study.get_trials(deepcopy=False)
    names = metric_names(study, metrics)
    order = param_order(trials, params)
    best = best_numbers(study, trials)
    records = []
    for t in trials:
        kind = None
        if t.values is not None:
            kind = "last-report" if t.state == TrialState.PRUNED else "final"
        attempts = t.user_attrs.get(ATTR_ATTEMPTS)
        reason = t.user_attrs.get(ATTR_FAIL_REASON) if t.state == TrialState.FAIL else None
        if t.state == TrialState.FAIL and not reason:
            reason = "no reason recorded"
        records.append(
            {
                "number": t.number,
                "state": t.state.name,
                "values": list(t.values) if t.values is not None else None,
                "valueKind": kind,
                "params": {p: _json_value(t.params[p]) for p in order if p in t.params},
                "best": t.number in best,
                "start": _iso(t.datetime_start),
                "complete": _iso(t.datetime_complete),
                "durationSeconds": round(t.duration.total_seconds(), 3) if t.duration is not None else None,
                "attempts": attempts if isinstance(attempts, int) and attempts >= 1 else 1,
                "lastStep": t.last_step,
                "failReason": str(reason) if reason is not None else None,
            }
        )
    return {
        "study": study.study_name,
        "source": {"kind": source_kind, "name": source_name},
        "objectives": [
            {"metric": m, "direction": d.name.lower()} for m, d in zip(names, study.directions, strict=True)
        ],
        "parameters": order,
        "best": best,
        "trials": records,
    }


# ------------------------------------------------------------------------------------------ formats


def to_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2)


def to_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)


def to_csv(data: Mapping[str, Any]) -> str:
    metrics = [o["metric"] for o in data["objectives"]]
    params = list(data["parameters"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "number",
            "state",
            *metrics,
            "valueKind",
            *[f"params.{p}" for p in params],
            "best",
            "start",
            "complete",
            "durationSeconds",
            "attempts",
            "lastStep",
            "failReason",
        ]
    )
    for t in data["trials"]:
        values = t["values"] or [None] * len(metrics)
        writer.writerow(
            [
                t["number"],
                t["state"],
                *["" if v is None else repr(float(v)) for v in values],
                t["valueKind"] or "",
                *[_csv_cell(t["params"].get(p, "")) for p in params],
                "true" if t["best"] else "false",
                t["start"] or "",
                t["complete"] or "",
                "" if t["durationSeconds"] is None else t["durationSeconds"],
                t["attempts"],
                "" if t["lastStep"] is None else t["lastStep"],
                t["failReason"] or "",
            ]
        )
    return out.getvalue()


def _headers(data: Mapping[str, Any]) -> list[str]:
    short = {"maximize": "max", "minimize": "min"}
    return [f"{o['metric']} ({short[o['direction']]})" for o in data["objectives"]]


def _value_cells(t: Mapping[str, Any], n: int) -> list[str]:
    if t["values"] is None:
        return [""] * n
    shown = [fmt_value(v) for v in t["values"]]
    return [f"({v})" for v in shown] if t["valueKind"] == "last-report" else shown


def _note(t: Mapping[str, Any], best_word: str) -> str:
    notes = []
    if t["best"]:
        notes.append(best_word)
    if t["state"] == "PRUNED":
        notes.append(f"pruned at step {t['lastStep']}" if t["lastStep"] is not None else "pruned")
    if t["failReason"]:
        notes.append(t["failReason"])
    if t["attempts"] > 1:
        notes.append(f"{t['attempts']} attempts")
    return "; ".join(notes)


def _best_word(data: Mapping[str, Any]) -> str:
    return "best" if len(data["objectives"]) == 1 else "Pareto front"


def to_plain(data: Mapping[str, Any]) -> str:
    """Aligned columns, one line per trial, no colour and no wrapping (for pipes)."""
    params = list(data["parameters"])
    n = len(data["objectives"])
    rows = [["#", "state", *_headers(data), *params, "duration", "note"]]
    for t in data["trials"]:
        rows.append(
            [
                str(t["number"]),
                t["state"],
                *_value_cells(t, n),
                *[fmt_param(t["params"][p]) if p in t["params"] else "" for p in params],
                fmt_duration(t["durationSeconds"]),
                _note(t, _best_word(data)),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def to_table(data: Mapping[str, Any], title: str, width: int) -> Table:
    """The table for a terminal ``width`` columns wide."""
    params = list(data["parameters"])
    n = len(data["objectives"])
    best_word = _best_word(data)
    rows = []
    for t in data["trials"]:
        cells = {p: fmt_param(t["params"][p]) for p in params if p in t["params"]}
        rows.append((t, _value_cells(t, n), cells))
    headers = _headers(data)
    fixed = ["#", "state", *headers, "duration", "note"]
    # One column per parameter if the table then fits; else one parameters column, a name=value a line.
    widths = [max([len(h)] + [len(r[2].get(h, "")) for r in rows]) for h in params]
    fixed_widths = [len(h) for h in fixed]
    fixed_widths[0] = max([1] + [len(str(r[0]["number"])) + 2 for r in rows])
    fixed_widths[1] = max([5] + [len(r[0]["state"]) for r in rows])
    for i in range(n):
        fixed_widths[2 + i] = max([len(headers[i])] + [len(r[1][i]) for r in rows])
    fixed_widths[-2] = max([8] + [len(fmt_duration(r[0]["durationSeconds"])) for r in rows])
    fixed_widths[-1] = min(20, max([4] + [len(_note(r[0], best_word)) for r in rows]))  # notes may wrap
    # Columns are 3 apart (a separator and a space each side), the edges take one each (no edge padding).
    n_columns = len(widths) + len(fixed_widths)
    per_column = sum(widths) + sum(fixed_widths) + 3 * (n_columns - 1) + 2 <= width

    # Narrow: one name=value a line in the parameters column, the metric's header may wrap, and the
    # duration goes (below 100 columns) so the notes keep some room.
    longest = max([10] + [len(f"{p}={v}") for r in rows for p, v in r[2].items()])
    show_duration = per_column or width >= 100

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for i, h in enumerate(headers):
        table.add_column(
            h, justify="right", overflow="fold", min_width=max([6] + [len(r[1][i]) for r in rows])
        )
    if per_column:
        for p in params:
            table.add_column(p, no_wrap=True)
    else:
        # Whole lines when the longest fits in half the width (rich then narrows the other columns);
        # a longer one is folded.
        table.add_column("parameters", no_wrap=longest <= width // 2, overflow="fold")
    if show_duration:
        table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("note")
    for t, values, cells in rows:
        style = STATE_STYLE.get(t["state"], "")
        value_cells = [Text(v, style="dim" if t["valueKind"] == "last-report" else "") for v in values]
        if per_column:
            param_cells = [cells.get(p, "") for p in params]
        else:
            param_cells = ["\n".join(f"{p}={v}" for p, v in cells.items())]
        number = f"★ {t['number']}" if t["best"] else str(t["number"])
        duration = [fmt_duration(t["durationSeconds"])] if show_duration else []
        table.add_row(
            number,
            Text(t["state"], style=style),
            *value_cells,
            *param_cells,
            *duration,
            _note(t, best_word),
            style="bold" if t["best"] else None,
        )
    captions = []
    if any(t["best"] for t in data["trials"]):
        captions.append(f"★ {best_word}")
    if any(t["valueKind"] == "last-report" for t in data["trials"]):
        captions.append("(value): a pruned trial's last report, not a final value")
    if not data["trials"]:
        captions.append("no trials yet")
    if captions:
        table.caption = " · ".join(captions)
        table.caption_justify = "left"
    return table


def render(data: Mapping[str, Any], fmt: str, console: Console, title: str) -> None:
    """Write the trial list in ``fmt`` (``table``: a table on a terminal, plain columns on a pipe)."""
    if fmt == "json":
        console.file.write(to_json(data) + "\n")
    elif fmt == "yaml":
        console.file.write(to_yaml(data))
    elif fmt == "csv":
        console.file.write(to_csv(data))
    elif console.is_terminal:
        console.print(to_table(data, title, console.width))
    else:
        console.file.write(to_plain(data))


__all__ = [
    "FORMATS",
    "TRIAL_LIST_SCHEMA",
    "render",
    "to_csv",
    "to_json",
    "to_plain",
    "to_table",
    "to_yaml",
    "trial_list",
]
