"""What ``hpo run`` shows: its live progress bar and the Pareto front's table (``hpo trials``: trials.py)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

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

from hpo_operator.core.events import fmt_params, fmt_value
from hpo_operator.core.observe import TrialView
from hpo_operator.core.plan import Counts


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
