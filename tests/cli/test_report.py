"""``hpo report``: one self-contained HTML file with Optuna's plots; ``hpo trials`` and ``hpo dashboard``."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import plotly.offline

from tests.cli.conftest import CustomStudy, RunHpo, hpo_env, load_local, local_storage

# Each plot's section, and the title Optuna gives the figure (left out: the section's heading names it).
PLOTS = {
    "optimization-history": "Optimization History Plot",
    "param-importances": "Hyperparameter Importances",
    "parallel-coordinates": "Parallel Coordinate Plot",
    "intermediate-values": "Intermediate Values Plot",
}
HEADINGS = {
    "optimization-history": "Optimization history",
    "param-importances": "Parameter importances",
    "parallel-coordinates": "Parallel coordinates",
    "intermediate-values": "Intermediate values",
}


def plot_div(html: str, slug: str) -> str:
    """The section of one plot; fails unless it holds a plotly graph div."""
    m = re.search(rf"<section id='{slug}'>(.*?)</section>", html, re.DOTALL)
    assert m, f"no section {slug}"
    section = m.group(1)
    assert f'id="plot-{slug}" class="plotly-graph-div"' in section, f"{slug} has no plot"
    return section


def test_report_has_every_plot_and_needs_no_network(
    custom_study: CustomStudy, run_hpo: RunHpo, tmp_path: Path
) -> None:
    path = custom_study("rep", trials={"total": 6, "parallelism": 2})
    assert run_hpo("run", str(path), cwd=path.parent).code == 0
    out = tmp_path / "report.html"
    result = run_hpo("report", str(path), "-o", str(out), cwd=path.parent)
    assert result.code == 0, result.text
    assert f"Wrote the report of local.rep (6 trials) to {out}" in " ".join(result.out.split())

    html = out.read_text()
    for slug, title in PLOTS.items():
        section = plot_div(html, slug)
        assert f"<h2>{HEADINGS[slug]}</h2>" in section and title not in section, f"{slug}: titled twice"
    # The figures carry the study's data: each trial's value in the history, the parameters' names.
    history = plot_div(html, "optimization-history")
    study = load_local(path, "rep")
    for t in study.get_trials():
        assert json.dumps(t.value)[:8] in history
    assert '"x"' in plot_div(html, "param-importances") and '"y"' in plot_div(html, "param-importances")
    # Self-contained: plotly.js inlined once, nothing loaded from elsewhere.
    assert plotly.offline.get_plotlyjs()[:500] in html
    assert html.count(plotly.offline.get_plotlyjs()[:500]) == 1
    assert not re.search(r"<script[^>]*\ssrc=", html) and not re.search(r"<link[^>]*\shref=", html)
    # The summary names the best trial and the trial table lists every trial.
    best = study.best_trial
    assert f"<th>Best trial</th><td>{best.number}: loss " in html
    assert html.count("<tr class='COMPLETE'>") + html.count("<tr class='COMPLETE best'>") == 6

    # Without -o the report lands next to the manifest.
    again = run_hpo("report", str(path), cwd=tmp_path)
    assert again.code == 0 and (path.parent / "hpo-report-study.html").exists()


def test_report_of_a_study_too_small_for_some_plots_explains_instead_of_crashing(
    custom_study: CustomStudy, run_hpo: RunHpo, tmp_path: Path
) -> None:
    path = custom_study(
        "tiny",
        trials={"total": 1, "parallelism": 1},
        template={
            "command": [
                "python",
                "-c",
                "from hpo_trial import reporting; reporting.current_trial().complete(0.5)",
            ]
        },
    )
    assert run_hpo("run", str(path), cwd=path.parent).code == 0
    out = tmp_path / "tiny.html"
    result = run_hpo("report", str(path), "-o", str(out), cwd=path.parent)
    assert result.code == 0, result.text
    html = out.read_text()
    plot_div(html, "optimization-history")
    assert "Parameter importances need at least two completed trials." in html
    assert "No trial reported intermediate values." in html


def test_report_of_a_multi_objective_study_from_storage_and_study_name(
    run_hpo: RunHpo, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    study = optuna.create_study(storage=url, study_name="two", directions=["maximize", "minimize"])
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1) ** 2), n_trials=8)
    out = tmp_path / "mo.html"
    result = run_hpo("report", "--storage", url, "-o", str(out), cwd=tmp_path)  # the only study: found
    assert result.code == 0, result.text
    html = out.read_text()
    assert "<h2>Pareto front</h2>" in plot_div(html, "pareto-front")
    # Unnamed objectives (a study made outside hpo, no metric names recorded) are numbered.
    assert "<th>objective 0 (maximize)</th><th>objective 1 (minimize)</th>" in html
    for i in (0, 1):
        plot_div(html, f"optimization-history-{i}")
        plot_div(html, f"param-importances-{i}")
    assert "Intermediate values are reported by single-objective studies only." in html

    optuna.create_study(storage=url, study_name="other")
    ambiguous = run_hpo("report", "--storage", url, cwd=tmp_path)
    assert (
        ambiguous.code == 2 and "--study: required, the storage holds 2 studies (other, two)" in ambiguous.err
    )
    missing = run_hpo("report", "--storage", url, "--study", "nope", cwd=tmp_path)
    assert missing.code == 1 and "no study 'nope'" in missing.err


def test_a_storage_url_that_does_not_parse_is_named_without_its_password(
    run_hpo: RunHpo, tmp_path: Path
) -> None:
    result = run_hpo("report", "--storage", "postgresql://u:p@ss:s3cret@db/hpo", cwd=tmp_path)
    assert result.code == 1, result.text
    assert "--storage: not a usable storage URL (it does not parse as driver://" in result.err
    assert "s3cret" not in result.text


def test_report_before_any_run_says_what_to_do(custom_study: CustomStudy, run_hpo: RunHpo) -> None:
    path = custom_study("fresh")
    result = run_hpo("report", str(path), cwd=path.parent)
    assert result.code == 1 and "has no local study yet" in result.err and "hpo run" in result.err


def test_trials_lists_every_trial_from_the_storage(custom_study: CustomStudy, run_hpo: RunHpo) -> None:
    path = custom_study("lst", trials={"total": 3, "parallelism": 1, "retries": 0, "maxFailed": 1})
    assert run_hpo("run", str(path), cwd=path.parent, env={"FAIL_TRIALS": "1"}).code == 0
    result = run_hpo("trials", str(path), cwd=path.parent)
    assert result.code == 0, result.text
    # Through a pipe: plain aligned columns, a header and one line per trial, parameters in columns.
    lines = result.out.splitlines()
    assert lines[0].split() == ["#", "state", "loss", "(min)", "x", "y", "duration", "note"]
    assert len(lines) == 4
    assert lines[1].split()[:5] == ["0", "COMPLETE", "0.0025", "0.25", "0"] and "best" in lines[1]
    assert lines[2].split()[:2] == ["1", "FAIL"] and "exit code 3" in lines[2]
    # The first line, on stderr, says which study it read.
    assert f"Reading the local study local.lst of {path} (hpo run), in sqlite:///" in result.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, method: str = "GET") -> tuple[int, bytes, str]:
    """Status, body and final URL (redirects followed) of one request."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read(), r.geturl()
    except urllib.error.HTTPError as e:
        return e.code, e.read(), url


def test_dashboard_opens_on_the_study_read_only_and_quietly(
    custom_study: CustomStudy, run_hpo: RunHpo
) -> None:
    path = custom_study("dash", trials={"total": 2, "parallelism": 1})
    assert run_hpo("run", str(path), cwd=path.parent).code == 0
    # Another study in the same storage (as on a cluster's shared database): not shown.
    optuna.create_study(storage=local_storage(path), study_name="someone-else")
    study_id = load_local(path, "dash")._study_id
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo_operator.cli.main", "dashboard", str(path), "--port", str(port)],
        cwd=path.parent,
        env=hpo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                body = json.loads(_get(f"{base}/api/studies")[1])
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.3)
        assert body is not None, "the dashboard never answered"
        assert [s["study_name"] for s in body["study_summaries"]] == ["local.dash"]
        # `/` opens the study's page, not the list of studies.
        status, page, final = _get(f"{base}/")
        assert status == 200 and final == f"{base}/dashboard/studies/{study_id}" and b"<html" in page.lower()
        detail = json.loads(_get(f"{base}/api/studies/{study_id}")[1])
        assert detail["objective_names"] == ["loss"] and len(detail["trials"]) == 2
        # Read-only: the page's delete (and any other change) is refused, with the reason it shows.
        status, reason, _ = _get(f"{base}/api/studies/{study_id}", method="DELETE")
        assert status == 403 and b"--writable" in reason
        status, _, _ = _get(f"{base}/api/studies/{study_id}/note", method="PUT")
        assert status == 403
        assert load_local(path, "dash").trials  # still there
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # What it printed: where to open, and nothing per request.
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines == [
        f"Reading the local study local.dash of {path} (hpo run), in {local_storage(path)}",
        "optuna-dashboard for local.dash (read-only; --writable to edit)",
        f"  http://127.0.0.1:{port}/dashboard/studies/{study_id}",
        "Ctrl-C stops it.",
    ], out
    assert "GET /" not in out, out


def test_the_dashboard_labels_a_study_without_metric_names_and_writes_when_asked(tmp_path: Path) -> None:
    from hpo_operator.cli.dashboard import build_server

    url = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(storage=url, study_name="old")  # made before names were recorded
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=2)
    storage = optuna.storages.RDBStorage(url)
    for writable, expected in ((False, 403), (True, 204)):
        server, _ = build_server(storage, "old", ["eval_loss"], "127.0.0.1", 0, writable=writable)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            detail = json.loads(_get(f"{base}/api/studies/{study._study_id}")[1])
            assert detail["objective_names"] == ["eval_loss"]
            status, _, _ = _get(f"{base}/api/studies/{study._study_id}", method="DELETE")
            assert status == expected
        finally:
            server.shutdown()
            server.server_close()
        if not writable:  # the names were shown, not written; the study is still there
            assert optuna.load_study(study_name="old", storage=url).metric_names is None
    assert optuna.get_all_study_names(url) == []  # the writable one deleted it


def trial_cells(html: str) -> list[list[str]]:
    """The cells of the report's trial table, one list per trial row (the header row left out)."""
    m = re.search(r"<table class='trials'>(.*?)</table>", html, re.DOTALL)
    assert m, "no trial table"
    rows = re.findall(r"<tr class='[^']*'>(.*?)</tr>", m.group(1), re.DOTALL)
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.DOTALL)] for r in rows
    ]


def test_report_of_string_boolean_and_integer_choices(
    mixed_study: Path, run_hpo: RunHpo, tmp_path: Path
) -> None:
    out = tmp_path / "mixed.html"
    result = run_hpo("report", str(mixed_study), "-o", str(out), cwd=tmp_path)
    assert result.code == 0, result.text
    html = out.read_text()
    study = load_local(mixed_study, "mixed")
    cells = trial_cells(html)
    assert len(cells) == len(study.trials)
    for t, row in zip(study.trials, cells, strict=True):
        # Each choice as it is written in the spec: a string as itself, a boolean as True/False, an
        # integer without decimals.
        assert t.params["optim"] in row, row
        assert str(t.params["fp16"]) in row, row
        assert str(t.params["batch"]) in row, row
        assert not any(c.endswith(".0000") and c != row[2] for c in row), row
    for slug in PLOTS:
        plot_div(html, slug)


def figure(html: str, slug: str) -> dict[str, Any]:
    """The plotly figure (data and layout) of one section, as ``Plotly.newPlot`` gets it."""
    section = plot_div(html, slug)
    m = re.search(r"Plotly\.newPlot\(\s*\"plot-[^\"]+\",\s*", section)
    assert m, f"{slug}: no Plotly.newPlot call"
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(section, m.end())
    layout, _ = decoder.raw_decode(section, re.compile(r",\s*").match(section, end).end())  # type: ignore[union-attr]
    return {"data": data, "layout": layout}


def test_report_reads_as_the_spec_and_the_cli_do(mixed_study: Path, run_hpo: RunHpo, tmp_path: Path) -> None:
    out = tmp_path / "mixed.html"
    assert run_hpo("report", str(mixed_study), "-o", str(out), cwd=tmp_path).code == 0
    html = out.read_text()
    study = load_local(mixed_study, "mixed")
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    spec_order = ["optim", "fp16", "batch", "learning_rate"]

    # The trial table: the metric and its direction name the value column, the parameters follow the
    # spec's order, the best trial's row is marked, a pruned trial's value is said to be its last report.
    head = re.search(r"<table class='trials'><tr>(.*?)</tr>", html, re.DOTALL)
    assert head
    assert re.findall(r"<th>(.*?)</th>", head.group(1)) == [
        "#",
        "state",
        "eval_loss (minimize)",
        *spec_order,
        "duration",
        "note",
    ]
    best = study.best_trial
    rows = trial_cells(html)
    assert rows[best.number][0] == str(best.number) and "★ best" in rows[best.number][-1]
    assert html.count("<tr class='COMPLETE best'>") == 1
    for t in pruned:
        assert f"pruned at step {t.last_step} (value: its last report)" in rows[t.number][-1]
    assert f"<th>Best trial</th><td>{best.number}: eval_loss " in html
    assert "optim=adamw" in html or f"optim={best.params['optim']}" in html

    # No plot repeats its heading as a title.
    for slug, title in PLOTS.items():
        assert f"<h2>{HEADINGS[slug]}</h2>" in plot_div(html, slug) and title not in html

    # History: the pruned trials are drawn apart, at their last reported value.
    history = figure(html, "optimization-history")
    marks = [d for d in history["data"] if d.get("name") == "Pruned trial (last reported value)"]
    assert len(marks) == 1 and marks[0]["x"] == [t.number for t in pruned]
    assert f"The {len(pruned)} trials pruned show their last reported value" in plot_div(
        html, "optimization-history"
    )

    # Parallel coordinates: axes in the spec's order, the pruned trials said to be left out, and no
    # trial's line so light that it vanishes on the white page.
    parallel = figure(html, "parallel-coordinates")
    assert parallel["layout"]["xaxis"]["ticktext"] == ["eval_loss", *spec_order]
    assert f"The {len(pruned)} trials pruned are left out" in plot_div(html, "parallel-coordinates")
    lines = [d for d in parallel["data"] if d.get("mode") == "lines"]
    assert len(lines) == len(study.trials) - len(pruned)
    for line in lines:
        r, g, b = (float(c) for c in re.findall(r"[\d.]+", line["line"]["color"]))
        assert 0.299 * r + 0.587 * g + 0.114 * b < 200, f"a near-white line: {line['line']['color']}"
        assert line["opacity"] >= 0.8

    # Intermediate values: the metric names the axis.
    assert (
        figure(html, "intermediate-values")["layout"]["yaxis"]["title"]["text"] == "eval_loss (intermediate)"
    )


def test_the_study_records_its_metric_names(mixed_study: Path) -> None:
    # Recorded when the study is created (the operator's storage code, which hpo run shares), so that
    # optuna-dashboard and Optuna's plots say eval_loss, not "Objective 0".
    assert load_local(mixed_study, "mixed").metric_names == ["eval_loss"]
