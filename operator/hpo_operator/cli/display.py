"""What ``hpo`` shows: the live progress bar of ``hpo run`` and trial tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType

from optuna.trial import FrozenTrial
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from hpo_operator.core.events import fmt_params, fmt_value, fmt_values
from hpo_operator.core.observe import TrialView
from hpo_operator.core.plan import Counts

STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan", "WAITING": "dim"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def trial_rows(trials: Iterable[FrozenTrial]) -> list[tuple[str, ...]]:
    """Rows of a trial table: number, state, value(s), parameters, duration, a note (why failed, ...)."""
    from hpo_trial.contract import ATTR_ATTEMPTS, ATTR_FAIL_REASON

    rows = []
    for t in trials:
        values = ""
        if t.values is not None:
            values = fmt_value(t.values[0]) if len(t.values) == 1 else fmt_values(t.values)
        duration = t.duration.total_seconds() if t.duration is not None else None
        notes = []
        attempts = t.user_attrs.get(ATTR_ATTEMPTS)
        if isinstance(attempts, int) and attempts > 1:
            notes.append(f"{attempts} attempts")
        if t.state.name == "PRUNED" and t.last_step is not None:
            notes.append(f"pruned at step {t.last_step}")
        if t.state.name == "FAIL":
            notes.append(str(t.user_attrs.get(ATTR_FAIL_REASON) or "no reason recorded"))
        style = STATE_STYLE.get(t.state.name, "")
        state = f"[{style}]{t.state.name}[/]" if style else t.state.name
        params = fmt_params(t.params)
        rows.append((str(t.number), state, values, params, _duration(duration), "; ".join(notes)))
    return rows


def trial_view_table(title: str, trials: Sequence[TrialView], metrics: Sequence[str]) -> Table:
    """A table of trials seen by the core (the best trial, the Pareto front)."""
    table = Table(title=title, title_justify="left")
    table.add_column("#")
    for m in metrics:
        table.add_column(m, overflow="fold")
    table.add_column("parameters", overflow="fold")
    for t in trials:
        values = [fmt_value(v) for v in (t.values or ())]
        table.add_row(str(t.number), *values, fmt_params(t.params))
    return table


class RunProgress:
    """The live bar of ``hpo run``: trials finished of the budget, how many run, the best so far."""

    def __init__(self, console: Console, label: str, total: int) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[running]} running"),
            TextColumn("{task.fields[best]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(label, total=total, running=0, best="")

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.refresh()
        self.progress.stop()

    def update(self, counts: Counts, running: int, best: str) -> None:
        self.progress.update(
            self.task, total=counts.budget, completed=counts.finished, running=running, best=best
        )

    def print(self, message: str, style: str | None = None) -> None:
        """A line above the bar (the bar stays at the bottom)."""
        self.progress.console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)
