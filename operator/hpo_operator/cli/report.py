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

from hpo_operator.cli.values import fmt_duration, fmt_param
from hpo_operator.core.events import fmt_value


@dataclass(frozen=True)
class Section:
    """One plot of the report: a figure with a note on how to read it, or a note explaining why the plot
    is not drawn."""

    slug: str  # the HTML id, stable so tests and links can find it
    title: str
    figure: go.Figure | None = None
    note: str | None = None


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def _draw(slug: str, title: str, draw: Callable[[], go.Figure], note: str | None = None) -> Section:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Section(slug, title, figure=_untitled(draw()), note=note)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return Section(slug, title, note=f"Optuna could not draw this plot for this study: {e}")


def metric_names(study: optuna.Study, metrics: Sequence[str] | None = None) -> list[str]:
    """The objectives' names: the spec's metrics, else the names recorded in the study
    (``study.set_metric_names``), else ``objective 0``, ``objective 1``..."""
    n = len(study.directions)
    if metrics and len(metrics) == n:
        return list(metrics)
    recorded = study.metric_names
    if recorded and len(recorded) == n:
        return list(recorded)
    return [f"objective {i}" for i in range(n)]


def _pruned(study: optuna.Study) -> list[FrozenTrial]:
    return list(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))


def _last_report(t: FrozenTrial) -> float | None:
    """A pruned trial's value: the one Optuna stored, else its last intermediate value."""
    if t.value is not None:
        return t.value
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def _trials_word(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"


# Optuna colours parallel-coordinate lines on plotly's Blues, whose light end is near-white (#f7fbff) and
# disappears on a white page at 50% opacity; the report uses its darker two thirds, opaque enough to see.
_BLUES_FROM = 0.4
_LINE_OPACITY = 0.8


def _blues(position: float) -> str:
    import plotly.colors

    scale = plotly.colors.sequential.Blues
    scaled = min(max(position, 0.0), 1.0) * (len(scale) - 1)
    i = min(int(scaled), len(scale) - 2)
    return str(plotly.colors.find_intermediate_color(scale[i], scale[i + 1], scaled - i, colortype="rgb"))


def _blues_position(color: str) -> float | None:
    """Where an ``rgb(r, g, b)`` colour lies on the Blues scale (0 light .. 1 dark), by its nearest sample."""
    import plotly.colors

    try:
        rgb = plotly.colors.unlabel_rgb(color)
    except (ValueError, IndexError, AttributeError):
        return None
    samples = [i / 100 for i in range(101)]
    return min(
        samples,
        key=lambda p: sum(
            (a - b) ** 2 for a, b in zip(plotly.colors.unlabel_rgb(_blues(p)), rgb, strict=True)
        ),
    )


def _visible_lines(fig: go.Figure) -> go.Figure:
    """The parallel-coordinate figure with every trial's line on the darker part of Blues, the colour bar
    to match (see ``_BLUES_FROM``)."""
    trimmed = [[i / 10, _blues(_BLUES_FROM + (1 - _BLUES_FROM) * i / 10)] for i in range(11)]
    for trace in fig.data:
        if getattr(trace, "mode", None) == "lines" and isinstance(trace.line.color, str):
            position = _blues_position(trace.line.color)
            if position is not None:
                trace.line.color = _blues(_BLUES_FROM + (1 - _BLUES_FROM) * position)
                trace.opacity = _LINE_OPACITY
        marker = getattr(trace, "marker", None)
        if marker is not None and marker.showscale:
            marker.colorscale = trimmed
    return fig


def _axes_in_order(fig: go.Figure, order: Sequence[str]) -> go.Figure:
    """The parallel-coordinate figure with its parameter axes in ``order`` (Optuna sorts them by name).

    Optuna draws one axis per x position (0 the objective, then the parameters), each trial a line
    through them, each axis's ticks as annotations at its x: all three are permuted together."""
    labels = list(fig.layout.xaxis.ticktext or ())
    if not labels:
        return fig
    rank = {name: i for i, name in enumerate(order)}
    # The objective axes stay first; the parameters follow the spec's order (unknown ones last).
    n_objectives = next((i for i, label in enumerate(labels) if label in rank), len(labels))
    perm = list(range(n_objectives)) + sorted(
        range(n_objectives, len(labels)), key=lambda i: rank.get(labels[i], len(rank))
    )
    if perm == list(range(len(labels))):
        return fig
    new_x = {old: new for new, old in enumerate(perm)}
    for trace in fig.data:
        if getattr(trace, "mode", None) == "lines" and trace.y is not None and len(trace.y) == len(labels):
            trace.y = [trace.y[i] for i in perm]
            if trace.customdata is not None:
                trace.customdata = [trace.customdata[i] for i in perm]
    for annotation in fig.layout.annotations:
        x = annotation.x
        if isinstance(x, int | float) and x == int(x) and int(x) in new_x and annotation.yref != "paper":
            annotation.x = new_x[int(x)]
    fig.layout.xaxis.ticktext = [labels[i] for i in perm]
    return fig


def _with_pruned(fig: go.Figure, pruned: Sequence[FrozenTrial], name: str) -> go.Figure:
    """The optimization history with the pruned trials' last reported values, marked apart."""
    shown = [(t.number, v) for t in pruned if (v := _last_report(t)) is not None]
    if shown:
        fig.add_trace(
            go.Scatter(
                x=[n for n, _ in shown],
                y=[v for _, v in shown],
                mode="markers",
                name="Pruned trial (last reported value)",
                marker={"symbol": "x", "color": "#b07a00", "size": 8},
                hovertemplate=f"trial %{{x}} pruned; last reported {name}: %{{y}}<extra></extra>",
            )
        )
    return fig


def _untitled(fig: go.Figure) -> go.Figure:
    """The figure without Optuna's title: the section's heading names the plot."""
    fig.update_layout(title=None, margin={"t": 30})
    return fig


def plot_sections(
    study: optuna.Study, metrics: Sequence[str] | None = None, params: Sequence[str] | None = None
) -> list[Section]:
    """The plots: history, importances, parallel coordinates, intermediate values (and Pareto front);
    ``params`` orders the parallel coordinates' axes (the spec's order)."""
    directions = study.directions
    names = metric_names(study, metrics)
    complete = _completed(study)
    pruned = _pruned(study)
    order = [p for p in param_order(study, params) if any(p in t.params for t in complete)]
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
                    lambda tgt=tgt, name=name: _with_pruned(
                        plot_optimization_history(study, target=tgt, target_name=name),
                        [] if multi else pruned,
                        name,
                    ),
                    note=(
                        f"Each completed trial's {name}, and the best so far."
                        + (
                            f" The {_trials_word(len(pruned))} pruned show their last reported value (x)."
                            if pruned and not multi
                            else ""
                        )
                    ),
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
                    lambda tgt=tgt, name=name: _visible_lines(
                        _axes_in_order(plot_parallel_coordinate(study, target=tgt, target_name=name), order)
                    ),
                    note=(
                        f"One line per completed trial, coloured by {name}."
                        + (
                            f" The {_trials_word(len(pruned))} pruned are left out (no final value)."
                            if pruned
                            else ""
                        )
                    ),
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

        def intermediate_plot() -> go.Figure:
            fig = plot_intermediate_values(study)
            fig.update_layout(yaxis_title=f"{names[0]} (intermediate)")
            return fig

        sections.append(
            _draw(
                "intermediate-values",
                intermediate,
                intermediate_plot,
                note=f"The {names[0]} each trial reported while it ran, by step; pruned trials stop early.",
            )
        )
    return sections


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; } td, th { padding: 0.2rem 0.6rem; text-align: left; }
table.trials th { vertical-align: bottom; } table.trials td.notes { min-width: 13em; }
table.trials td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.trials tr:nth-child(even) { background: #f6f6f6; } .note { color: #666; font-style: italic; }
table.trials tr.best { background: #fff3c4; font-weight: 600; } .marker { color: #9a6b00; }
.COMPLETE .state { color: #17632a; } .FAIL .state { color: #a11; } .PRUNED .state { color: #875a00; }
.PRUNED .value { color: #777; } code { font-size: 0.85rem; }
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def param_order(study: optuna.Study, params: Sequence[str] | None = None) -> list[str]:
    """The parameters in the spec's order (``params``), then any others in the order trials have them
    (the order they were asked in, which is the spec's for studies the operator or ``hpo run`` made)."""
    order = list(params or ())
    for t in study.get_trials(deepcopy=False):
        order += [p for p in t.params if p not in order]
    return order


def _in_order(values: dict[str, object], order: Sequence[str]) -> dict[str, object]:
    return {p: values[p] for p in order if p in values} | values


def _directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def _summary(study: optuna.Study, metrics: Sequence[str] | None, order: Sequence[str]) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    names = metric_names(study, metrics)
    objectives = ", ".join(f"{_esc(m)} ({d})" for m, d in zip(names, _directions(study), strict=True))
    rows = [
        ("Study", _esc(study.study_name)),
        ("Objective", objectives),
        ("Trials", _esc(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none")),
    ]
    if len(names) == 1:
        if _completed(study):
            best = study.best_trial
            shown = ", ".join(f"{p}={fmt_param(v)}" for p, v in _in_order(dict(best.params), order).items())
            rows.append(
                (
                    "Best trial",
                    f"{best.number}: {_esc(names[0])} {_esc(fmt_value(best.value))}, "
                    f"parameters <code>{_esc(shown)}</code>",
                )
            )
    else:
        front = study.best_trials
        if front:
            rows.append(("Pareto front", _esc(", ".join(f"trial {t.number}" for t in front))))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='summary'>{body}</table>"


def _best_numbers(study: optuna.Study) -> set[int]:
    """The best trial (single objective) or the Pareto front's trials."""
    if not _completed(study):
        return set()
    if len(study.directions) == 1:
        return {study.best_trial.number}
    return {t.number for t in study.best_trials}


def _trial_table(study: optuna.Study, metrics: Sequence[str] | None, order: Sequence[str]) -> str:
    from hpo_trial.contract import ATTR_ATTEMPTS, ATTR_FAIL_REASON

    trials = study.get_trials(deepcopy=False)
    names = metric_names(study, metrics)
    best = _best_numbers(study)
    marker = "best" if len(names) == 1 else "Pareto front"
    heads = [
        "#",
        "state",
        *[f"{m} ({d})" for m, d in zip(names, _directions(study), strict=True)],
        *order,
        "duration",
        "note",
    ]
    head = "".join(f"<th>{_esc(h)}</th>" for h in heads)
    rows = []
    for t in trials:
        values = list(t.values) if t.values else [None] * len(names)
        notes = []
        if t.number in best:
            notes.append(f"<span class='marker'>★ {marker}</span>")
        if t.state == TrialState.PRUNED:
            step = f" at step {t.last_step}" if t.last_step is not None else ""
            notes.append(_esc(f"pruned{step} (value: its last report)"))
        if t.state == TrialState.FAIL:
            notes.append(_esc(t.user_attrs.get(ATTR_FAIL_REASON) or "no reason recorded"))
        attempts = t.user_attrs.get(ATTR_ATTEMPTS)
        if isinstance(attempts, int) and attempts > 1:
            notes.append(_esc(f"{attempts} attempts"))
        cells = [
            f"<td class='num'>{t.number}</td>",
            f"<td class='state'>{_esc(t.state.name)}</td>",
            *[f"<td class='num value'>{_esc(fmt_value(v) if v is not None else '')}</td>" for v in values],
            *[
                f"<td class='{'num' if _numeric(t.params.get(p)) else 'text'}'>"
                f"{_esc(fmt_param(t.params[p]) if p in t.params else '')}</td>"
                for p in order
            ],
            f"<td class='num'>{_esc(fmt_duration(t.duration.total_seconds()) if t.duration else '')}</td>",
            f"<td class='notes'>{'; '.join(notes)}</td>",
        ]
        classes = t.state.name + (" best" if t.number in best else "")
        rows.append(f"<tr class='{classes}'>" + "".join(cells) + "</tr>")
    return f"<table class='trials'><tr>{head}</tr>{''.join(rows)}</table>"


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render_report(
    study: optuna.Study,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    params: Sequence[str] | None = None,
) -> str:
    """The whole report as one HTML document, plotly.js inlined. ``metrics`` names the objectives and
    ``params`` orders the parameters (the spec's), where known."""
    title = title or f"HPO study {study.study_name}"
    order = param_order(study, params)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style>",
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class='note'>Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} by hpo report.</p>",
        _summary(study, metrics, order),
    ]
    for s in plot_sections(study, metrics, order):
        parts.append(f"<section id='{s.slug}'><h2>{_esc(s.title)}</h2>")
        if s.note is not None:
            parts.append(f"<p class='note'>{_esc(s.note)}</p>")
        if s.figure is not None:
            parts.append(s.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{s.slug}"))
        parts.append("</section>")
    parts.append("<section id='trials'><h2>Trials</h2>" + _trial_table(study, metrics, order) + "</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
