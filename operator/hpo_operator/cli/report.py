"""`hpo report`: one self-contained HTML file with a study's summary and Optuna's plots.

plotly.js is inlined once, so the file opens anywhere without a network. A plot that cannot be drawn
for this study (no completed trial, a single trial, no intermediate values) is replaced by a note
saying why, never a crash.
"""

from __future__ import annotations

import datetime as dt
import html
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
import plotly.graph_objects as go
import plotly.offline
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import (
    plot_intermediate_values,
    plot_optimization_history,
    plot_parallel_coordinate,
    plot_param_importances,
    plot_pareto_front,
)

from hpo_operator.cli.values import fmt_param
from hpo_operator.core.events import fmt_params, fmt_value


@dataclass(frozen=True)
class Section:
    """One plot of the report: a figure, or a note explaining why the plot is not drawn."""

    slug: str  # the HTML id, stable so tests and links can find it
    title: str
    figure: go.Figure | None = None
    note: str | None = None


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def _draw(slug: str, title: str, draw: Callable[[], go.Figure]) -> Section:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Section(slug, title, figure=draw())
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return Section(slug, title, note=f"Optuna could not draw this plot for this study: {e}")


def plot_sections(study: optuna.Study, metrics: Sequence[str] | None = None) -> list[Section]:
    """The plots: history, importances, parallel coordinates, intermediate values (and Pareto front)."""
    directions = study.directions
    names = (
        list(metrics)
        if metrics and len(metrics) == len(directions)
        else [f"objective {i}" for i in range(len(directions))]
    )
    complete = _completed(study)
    n_params = len({p for t in complete for p in t.params})
    sections: list[Section] = []
    multi = len(directions) > 1

    if multi:
        if complete:
            sections.append(
                _draw("pareto-front", "Pareto front", lambda: plot_pareto_front(study, target_names=names))
            )
        else:
            sections.append(Section("pareto-front", "Pareto front", note="No trial has completed yet."))

    for i, name in enumerate(names):
        suffix = f"-{i}" if multi else ""
        label = f" ({name})" if multi else ""

        def target(t: FrozenTrial, i: int = i) -> float:
            return t.values[i]

        def importance_target(t: FrozenTrial, i: int = i) -> float:
            # The importance evaluator looks for parameters that make the target low.
            return -t.values[i] if directions[i] == optuna.study.StudyDirection.MAXIMIZE else t.values[i]

        tgt = target if multi else None
        history = f"Optimization history{label}"
        if not complete:
            sections.append(
                Section(f"optimization-history{suffix}", history, note="No trial has completed yet.")
            )
        else:
            sections.append(
                _draw(
                    f"optimization-history{suffix}",
                    history,
                    lambda tgt=tgt, name=name: plot_optimization_history(study, target=tgt, target_name=name),
                )
            )

        importances = f"Parameter importances{label}"
        if len(complete) < 2:
            sections.append(
                Section(
                    f"param-importances{suffix}",
                    importances,
                    note="Parameter importances need at least two completed trials.",
                )
            )
        elif n_params == 0:
            sections.append(
                Section(
                    f"param-importances{suffix}", importances, note="The completed trials have no parameters."
                )
            )
        else:
            imp_tgt = importance_target if multi else None
            sections.append(
                _draw(
                    f"param-importances{suffix}",
                    importances,
                    lambda imp_tgt=imp_tgt, name=name: plot_param_importances(
                        study, target=imp_tgt, target_name=name
                    ),
                )
            )

        parallel = f"Parallel coordinates{label}"
        if not complete or n_params == 0:
            sections.append(
                Section(
                    f"parallel-coordinates{suffix}",
                    parallel,
                    note="Parallel coordinates need a completed trial with parameters.",
                )
            )
        else:
            sections.append(
                _draw(
                    f"parallel-coordinates{suffix}",
                    parallel,
                    lambda tgt=tgt, name=name: plot_parallel_coordinate(study, target=tgt, target_name=name),
                )
            )

    intermediate = "Intermediate values"
    trials = study.get_trials(deepcopy=False)
    if multi:
        sections.append(
            Section(
                "intermediate-values",
                intermediate,
                note="Intermediate values are reported by single-objective studies only.",
            )
        )
    elif not any(t.intermediate_values for t in trials):
        sections.append(
            Section("intermediate-values", intermediate, note="No trial reported intermediate values.")
        )
    else:
        sections.append(_draw("intermediate-values", intermediate, lambda: plot_intermediate_values(study)))
    return sections


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; } td, th { padding: 0.2rem 0.6rem; text-align: left; }
tr:nth-child(even) { background: #f6f6f6; } .note { color: #666; font-style: italic; }
.COMPLETE { color: #17632a; } .FAIL { color: #a11; } .PRUNED { color: #875a00; } code { font-size: 0.85rem; }
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def _summary(study: optuna.Study, metrics: Sequence[str] | None) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    dirs = [d.name.lower() for d in study.directions]
    objectives = ", ".join(
        f"{_esc(m)} ({d})"
        for m, d in zip(metrics or [f"objective {i}" for i in range(len(dirs))], dirs, strict=False)
    )
    rows = [
        ("Study", _esc(study.study_name)),
        ("Objective", objectives),
        ("Trials", _esc(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none")),
    ]
    if len(dirs) == 1:
        complete = _completed(study)
        if complete:
            best = study.best_trial
            rows.append(
                (
                    "Best trial",
                    f"{best.number}: value {_esc(fmt_value(best.value))}, "
                    f"parameters <code>{_esc(fmt_params(best.params))}</code>",
                )
            )
    else:
        front = study.best_trials
        if front:
            rows.append(("Pareto front", _esc(", ".join(f"trial {t.number}" for t in front))))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='summary'>{body}</table>"


def _trial_table(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    params = sorted({p for t in trials for p in t.params})
    head = "".join(f"<th>{_esc(h)}</th>" for h in ["#", "state", "value(s)", "duration", *params])
    rows = []
    for t in trials:
        values = ", ".join(fmt_value(v) for v in t.values) if t.values else ""
        duration = f"{t.duration.total_seconds():.1f}s" if t.duration else ""
        cells = [
            str(t.number),
            t.state.name,
            values,
            duration,
            *[fmt_param(t.params[p]) if p in t.params else "" for p in params],
        ]
        rows.append(f"<tr class='{t.state.name}'>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return f"<table class='trials'><tr>{head}</tr>{''.join(rows)}</table>"


def render_report(study: optuna.Study, metrics: Sequence[str] | None = None, title: str | None = None) -> str:
    """The whole report as one HTML document, plotly.js inlined."""
    title = title or f"HPO study {study.study_name}"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style>",
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class='note'>Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} by hpo report.</p>",
        _summary(study, metrics),
    ]
    for s in plot_sections(study, metrics):
        parts.append(f"<section id='{s.slug}'><h2>{_esc(s.title)}</h2>")
        if s.figure is not None:
            parts.append(s.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{s.slug}"))
        else:
            parts.append(f"<p class='note'>{_esc(s.note)}</p>")
        parts.append("</section>")
    parts.append("<section id='trials'><h2>Trials</h2>" + _trial_table(study) + "</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
