"""Spec → Optuna distributions and samplers; what a sampler cannot handle is refused, naming the field."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from hpo_operator.core import search_space as ss
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tests.unit.helpers import custom_spec, error_of

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_each_parameter_type_becomes_its_distribution() -> None:
    spec = parse_spec(
        custom_spec(
            {"name": "lr", "type": "float", "low": 1e-6, "high": 1e-4, "log": True},
            {"name": "warmup_ratio", "type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
            {"name": "epochs", "type": "int", "low": 1, "high": 3},
            {"name": "batch", "type": "int", "low": 16, "high": 128, "step": 16},
            {"name": "hidden", "type": "int", "low": 8, "high": 512, "log": True},
            {"name": "loss.scale", "type": "categorical", "choices": [10, 20.5, "x", True, None]},
        )
    )
    d = ss.distributions(spec)
    assert list(d) == ["lr", "warmup_ratio", "epochs", "batch", "hidden", "loss.scale"]
    assert d["lr"] == FloatDistribution(1e-6, 1e-4, log=True)
    assert d["warmup_ratio"] == FloatDistribution(0.0, 0.3, step=0.1)
    assert d["epochs"] == IntDistribution(1, 3)
    assert d["batch"] == IntDistribution(16, 128, step=16)
    assert d["hidden"] == IntDistribution(8, 512, log=True)
    assert d["loss.scale"] == CategoricalDistribution([10, 20.5, "x", True, None])


def test_asking_with_the_distributions_gives_values_inside_the_space() -> None:
    spec = parse_spec(custom_spec(sampler={"type": "TPE", "seed": 1}))
    study = optuna.create_study(sampler=ss.build_sampler(spec))
    dists = ss.distributions(spec)
    for _ in range(15):
        trial = study.ask(dists)
        assert set(trial.params) == {"x", "n", "kind"}
        assert -5.0 <= trial.params["x"] <= 5.0 and trial.params["n"] in (1, 2, 3, 4)
        assert trial.params["kind"] in ("a", "b")
        study.tell(trial, trial.params["x"] ** 2)


@pytest.mark.parametrize("kind", ["TPE", "Random", "CMAES", "QMC", "NSGAII"])
def test_every_sampler_is_built_seeded_and_reproducible(kind: str) -> None:
    spec = parse_spec(
        custom_spec(
            {"name": "x", "type": "float", "low": -5.0, "high": 5.0},
            {"name": "y", "type": "float", "low": 0.1, "high": 10.0, "log": True},
            sampler={"type": kind, "seed": 7},
        )
    )

    def run() -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=ss.build_sampler(spec))
        out = []
        for _ in range(4):
            t = study.ask(ss.distributions(spec))
            out.append(t.params)
            study.tell(t, t.params["x"] ** 2 + t.params["y"])
        return out

    assert type(ss.build_sampler(spec)) is ss.SAMPLER_CLASSES[kind]
    assert run() == run()


def test_grid_sampler_walks_the_whole_grid() -> None:
    spec = parse_spec(
        custom_spec(
            {"name": "a", "type": "int", "low": 1, "high": 3},
            {"name": "b", "type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
            {"name": "c", "type": "categorical", "choices": ["p", "q"]},
            sampler={"type": "Grid", "seed": 0},
            trials={"total": 18},
        )
    )
    assert ss.grid_size(spec) == 18
    study = optuna.create_study(sampler=ss.build_sampler(spec))
    # Trial processes tell through their own study object, never through the Grid sampler (whose
    # after_trial calls study.stop(), which raises outside study.optimize).
    teller = optuna.Study(study.study_name, study._storage, sampler=optuna.samplers.RandomSampler())
    seen = set()
    for _ in range(18):
        t = study.ask(ss.distributions(spec))
        seen.add((t.params["a"], t.params["b"], t.params["c"]))
        teller.tell(t.number, 0.0)
    assert len(seen) == 18
    assert {b for _, b, _ in seen} == {0.0, 0.1, 0.2}


def test_grid_sampler_refuses_a_continuous_float_naming_it() -> None:
    error = error_of(
        custom_spec(
            {"name": "a", "type": "int", "low": 1, "high": 3},
            {"name": "lr", "type": "float", "low": 1e-5, "high": 1e-3, "log": True},
            sampler={"type": "Grid"},
        )
    )
    assert error.field == "spec.searchSpace[1]"
    assert "Grid sampler needs discrete values" in str(error) and "'lr'" in str(error)


def test_grid_sampler_refuses_a_budget_larger_than_the_grid() -> None:
    raw = custom_spec(
        {"name": "a", "type": "int", "low": 1, "high": 3}, sampler={"type": "Grid"}, trials={"total": 4}
    )
    error = error_of(raw)
    assert error.field == "spec.trials.total"
    assert "3 points" in str(error)
    raw["trials"]["total"] = 3
    parse_spec(raw)


def test_grid_sampler_refuses_a_huge_grid() -> None:
    error = error_of(
        custom_spec({"name": "a", "type": "int", "low": 0, "high": 10_000_000}, sampler={"type": "Grid"})
    )
    assert error.field == "spec.searchSpace"


def test_grid_sampler_needs_complete_enqueued_sets() -> None:
    raw = custom_spec(
        {"name": "a", "type": "int", "low": 1, "high": 3},
        {"name": "b", "type": "categorical", "choices": ["p", "q"]},
        sampler={"type": "Grid"},
        trials={"total": 3},
        enqueue=[{"a": 2}],
    )
    error = error_of(raw)
    assert error.field == "spec.enqueue[0]"
    assert "missing: b" in str(error)


@pytest.mark.parametrize("kind", ["CMAES"])
def test_single_objective_samplers_refuse_multi_objective(kind: str) -> None:
    error = error_of(
        custom_spec(
            objective=[{"metric": "a"}, {"metric": "b", "direction": "minimize"}],
            sampler={"type": kind},
        )
    )
    assert error.field == "spec.sampler.type"
    assert f"the {kind} sampler cannot optimize 2 objectives" in str(error)


@pytest.mark.parametrize("kind", ["TPE", "Random", "QMC", "NSGAII", "Grid"])
def test_multi_objective_samplers_accept_two_objectives(kind: str) -> None:
    params = [
        {"name": "n", "type": "int", "low": 1, "high": 4},
        {"name": "k", "type": "categorical", "choices": [1, 2]},
    ]
    spec = parse_spec(
        custom_spec(
            *params,
            objective=[{"metric": "a"}, {"metric": "b", "direction": "minimize"}],
            sampler={"type": kind, "seed": 3},
            trials={"total": 8},
        )
    )
    study = optuna.create_study(directions=list(spec.directions), sampler=ss.build_sampler(spec))
    for _ in range(3):
        t = study.ask(ss.distributions(spec))
        study.tell(t, [t.params["n"], t.params["k"]])
    assert len(study.best_trials) >= 1


def test_sampler_options_are_checked_against_the_sampler() -> None:
    spec = parse_spec(
        custom_spec(sampler={"type": "TPE", "options": {"n_startup_trials": 3, "multivariate": True}})
    )
    sampler = ss.build_sampler(spec)
    assert sampler._n_startup_trials == 3  # type: ignore[attr-defined]
    error = error_of(custom_spec(sampler={"type": "TPE", "options": {"population_size": 3}}))
    assert error.field == "spec.sampler.options.population_size"
    assert "not an option of the TPE sampler" in str(error) and "n_startup_trials" in str(error)
    error = error_of(custom_spec(sampler={"type": "TPE", "options": {"seed": 3}}))
    assert error.field == "spec.sampler.options.seed" and "spec.sampler.seed" in str(error)
    # Python objects cannot be given in YAML: not offered as options.
    assert "gamma" not in ss.sampler_options("TPE") and "constraints_func" not in ss.sampler_options("NSGAII")
    error = error_of(custom_spec(sampler={"type": "NSGAII", "options": {"population_size": 1}}))
    assert error.field == "spec.sampler.options"


@pytest.mark.parametrize(
    ("kind", "options", "field", "words"),
    [
        # The reviewer's repro: a string where TPE wants an int used to crash every ask in the operator.
        ("TPE", {"n_startup_trials": "x"}, "n_startup_trials", ["takes int", "'x'"]),
        ("TPE", {"n_startup_trials": 2.5}, "n_startup_trials", ["takes int", "2.5"]),
        ("TPE", {"multivariate": "yes"}, "multivariate", ["takes bool | None", "'yes'"]),
        ("TPE", {"consider_endpoints": 1}, "consider_endpoints", ["takes bool | None"]),
        ("NSGAII", {"crossover_prob": "0.9"}, "crossover_prob", ["takes float", "'0.9'"]),
        ("NSGAII", {"mutation_prob": float("nan")}, "mutation_prob", ["takes float | None"]),
        ("QMC", {"scramble": "true"}, "scramble", ["takes bool"]),
        ("CMAES", {"x0": {"x": "a", "n": 2}}, "x0", ["must be dict[str, Any] | None"]),
        ("CMAES", {"x0": [1.0]}, "x0", ["takes dict[str, Any] | None"]),
    ],
)
def test_sampler_option_values_are_checked_against_the_constructor_type_hints(
    kind: str, options: dict[str, Any], field: str, words: list[str]
) -> None:
    error = error_of(custom_spec(sampler={"type": kind, "options": options}))
    if field == "x0" and isinstance(options["x0"], dict):
        # dict[str, Any] passes the type check; CMA-ES refuses the value when it samples (trial run).
        assert error.field == "spec.sampler.options" and "could not convert string to float" in str(error)
        return
    assert error.field == f"spec.sampler.options.{field}", str(error)
    for word in words:
        assert word in str(error)


@pytest.mark.parametrize(
    ("kind", "options", "words"),
    [
        # Accepted by the constructors; Optuna refuses them only when it samples.
        ("TPE", {"n_ei_candidates": 0}, ["TPE sampler failed to sample", "must be positive"]),
        ("TPE", {"n_ei_candidates": -3}, ["TPE sampler failed to sample"]),
        ("CMAES", {"popsize": 0}, ["CMAES sampler failed to sample", "popsize"]),
        # Refused by the constructors.
        ("QMC", {"qmc_type": "foo"}, ["QMC sampler refused them", "qmc_type"]),
        ("NSGAII", {"crossover_prob": 2.0}, ["NSGAII sampler refused them", "crossover_prob"]),
    ],
)
def test_sampler_option_values_the_sampler_refuses_are_spec_errors(
    kind: str, options: dict[str, Any], words: list[str]
) -> None:
    error = error_of(custom_spec(sampler={"type": kind, "options": options}))
    assert error.field == "spec.sampler.options", str(error)
    for word in words:
        assert word in str(error)


def test_good_sampler_options_pass_and_the_trial_run_leaves_no_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for kind, options in [
        ("TPE", {"n_startup_trials": 5, "multivariate": True, "group": True, "n_ei_candidates": 8}),
        ("CMAES", {"x0": {"x": 0.5, "n": 2}, "sigma0": 0.3, "popsize": 4, "n_startup_trials": 2}),
        ("NSGAII", {"population_size": 10, "crossover_prob": 1, "mutation_prob": None}),
        ("QMC", {"qmc_type": "halton", "scramble": True}),
        ("Random", {}),
    ]:
        with caplog.at_level("INFO", logger="optuna"):
            spec = parse_spec(custom_spec(sampler={"type": kind, "seed": 3, "options": options}))
        assert not [r for r in caplog.records if r.name.startswith("optuna")], caplog.text
        # The trial run's start-up override is not the study's sampler.
        if "n_startup_trials" in options:
            sampler = ss.build_sampler(spec)
            assert sampler._n_startup_trials == options["n_startup_trials"]  # type: ignore[attr-defined]
    # Options whose hints pydantic can check are typed: the gap the reviewer hit is closed for each.
    for kind in ("TPE", "CMAES", "QMC", "NSGAII"):
        for name in ss.sampler_options(kind):
            assert ss.option_adapter(kind, name) is not None, (kind, name)


def test_the_trial_run_is_done_once_per_sampler_and_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator parses every study's spec at every reconcile; the sampler is tried once."""
    runs: list[str] = []
    real = ss._trial_run

    def counted(spec: Any) -> None:
        runs.append(spec.sampler.type)
        real(spec)

    monkeypatch.setattr(ss, "_trial_run", counted)
    monkeypatch.setattr(ss, "_TRIAL_RUNS", {})  # a cold cache, whatever ran before
    good = custom_spec(sampler={"type": "TPE", "seed": 11, "options": {"n_ei_candidates": 7}})
    bad = custom_spec(sampler={"type": "TPE", "seed": 11, "options": {"n_ei_candidates": 0}})
    for _ in range(3):
        parse_spec(good)
        with pytest.raises(SpecError, match=r"TPE sampler failed to sample") as refused:
            parse_spec(bad)
        assert refused.value.field == "spec.sampler.options"
    assert runs == ["TPE", "TPE"]  # one run each, the outcome remembered (a failure too)
    other_space = custom_spec(sampler={"type": "TPE", "seed": 11, "options": {"n_ei_candidates": 7}})
    other_space["searchSpace"][0]["high"] = 0.9
    parse_spec(other_space)
    assert len(runs) == 3  # another space is another run


@pytest.mark.parametrize(
    ("options", "liar"),
    [
        ({}, True),  # Optuna 5's default, its recommendation for trials asked while others run
        ({"constant_liar": False}, False),  # the user's word stands
    ],
)
def test_tpe_lies_constantly_for_parallel_trials_unless_told_otherwise(
    options: dict[str, Any], liar: bool
) -> None:
    """The operator asks while trials run (parallelism > 1): TPE must count the running trials' params as
    bad guesses, or parallel asks all land on the same point. Optuna 5 does that by default (the project
    pins optuna>=5,<6); this pins it, so an upgrade that changes the default is noticed."""
    spec = parse_spec(custom_spec(sampler={"type": "TPE", "options": options}, trials={"parallelism": 4}))
    sampler = ss.build_sampler(spec)
    assert sampler._constant_liar is liar  # type: ignore[attr-defined]


def test_enqueued_sets_must_fit_the_space() -> None:
    parse_spec(custom_spec(enqueue=[{"x": 1.5, "n": 2, "kind": "b"}, {"x": 0.0}]))
    cases = [
        ({"y": 1.0}, "spec.enqueue[0].y", "not a parameter"),
        ({"x": 7.0}, "spec.enqueue[0].x", "outside"),
        ({"n": 2.5}, "spec.enqueue[0].n", "whole number"),
        ({"n": "2"}, "spec.enqueue[0].n", "number"),
        ({"kind": "c"}, "spec.enqueue[0].kind", "not one of the choices"),
    ]
    for params, path, words in cases:
        error = error_of(custom_spec(enqueue=[params]))
        assert error.field == path, str(error)
        assert words in str(error)
        assert "spec.searchSpace[" in str(error) or "not a parameter" in str(error)


def test_enqueued_values_must_be_on_the_step() -> None:
    raw = custom_spec({"name": "b", "type": "int", "low": 16, "high": 128, "step": 16}, enqueue=[{"b": 20}])
    error = error_of(raw)
    assert error.field == "spec.enqueue[0].b" and "step" in str(error)


def test_enqueued_set_is_what_ask_returns_first() -> None:
    spec = parse_spec(
        custom_spec(enqueue=[{"x": 1.25, "n": 3, "kind": "b"}], sampler={"type": "Random", "seed": 0})
    )
    study = optuna.create_study(sampler=ss.build_sampler(spec))
    for params in spec.enqueue:
        study.enqueue_trial(dict(params))
    first = study.ask(ss.distributions(spec))
    assert first.number == 0 and first.params == {"x": 1.25, "n": 3, "kind": "b"}


def test_a_sampler_rebuilt_on_resume_does_not_replay_its_draws() -> None:
    """An operator restarted mid-study rebuilds its sampler; with the same seed, Random (and TPE's
    startup trials) would propose the very same parameters again."""
    spec = parse_spec(custom_spec(sampler={"type": "Random", "seed": 11}))
    dists = ss.distributions(spec)
    study = optuna.create_study(sampler=ss.build_sampler(spec))
    first = [study.ask(dists).params for _ in range(3)]
    resumed = optuna.Study(study.study_name, study._storage, sampler=ss.build_sampler(spec, trials_so_far=3))
    again = [resumed.ask(dists).params for _ in range(3)]
    assert not any(p in first for p in again)
    # Without the shift, the rebuilt sampler would replay the first draws.
    replay = optuna.Study(study.study_name, study._storage, sampler=ss.build_sampler(spec))
    assert replay.ask(dists).params == first[0]
    # QMC and Grid derive their points from the trial number and the stored trials: seed unchanged.
    qmc = parse_spec(custom_spec(sampler={"type": "QMC", "seed": 11}))
    assert ss.build_sampler(qmc, trials_so_far=5)._seed == ss.build_sampler(qmc)._seed  # type: ignore[attr-defined]


def test_enqueued_values_take_their_distribution_type() -> None:
    spec = parse_spec(custom_spec())
    coerced = ss.coerce_params(spec, {"x": 2, "n": 3, "kind": "a"})
    assert coerced == {"x": 2.0, "n": 3, "kind": "a"}
    assert type(coerced["x"]) is float and type(coerced["n"]) is int


@pytest.mark.parametrize(
    ("kind", "options", "field", "words"),
    [
        ("GP", {"n_startup_trials": "2"}, "n_startup_trials", ["takes int", "GP sampler's"]),
        ("GP", {"deterministic_objective": 1}, "deterministic_objective", ["takes bool"]),
        ("NSGAIII", {"dividing_parameter": 2.5}, "dividing_parameter", ["takes int", "NSGAIII"]),
        ("NSGAIII", {"crossover_prob": "high"}, "crossover_prob", ["takes float"]),
        ("BruteForce", {"avoid_premature_stop": "no"}, "avoid_premature_stop", ["takes bool"]),
    ],
)
def test_the_added_samplers_options_are_typed(
    kind: str, options: dict[str, Any], field: str, words: list[str]
) -> None:
    space = [{"name": "n", "type": "int", "low": 1, "high": 4}]
    error = error_of(custom_spec(*space, sampler={"type": kind, "options": options}, trials={"total": 4}))
    assert error.field == f"spec.sampler.options.{field}", str(error)
    for word in words:
        assert word in str(error)
    # Options they do not take are named with the ones they do; Python objects are not offered.
    error = error_of(
        custom_spec(*space, sampler={"type": kind, "options": {"gamma": 1}}, trials={"total": 4})
    )
    assert error.field == "spec.sampler.options.gamma" and f"not an option of the {kind} sampler" in str(
        error
    )
    assert "constraints_func" not in ss.sampler_options(kind)


@pytest.mark.parametrize("kind", ["GP", "NSGAIII", "BruteForce"])
def test_the_added_samplers_are_built_and_sample(kind: str) -> None:
    space = [
        {"name": "n", "type": "int", "low": 1, "high": 4},
        {"name": "c", "type": "categorical", "choices": ["a", "b"]},
    ]
    spec = parse_spec(custom_spec(*space, sampler={"type": kind, "seed": 1}, trials={"total": 8}))
    sampler = ss.build_sampler(spec)
    assert type(sampler) is ss.SAMPLER_CLASSES[kind]
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(3):
        trial = study.ask(ss.distributions(spec))
        study.tell(trial, trial.params["n"])
    assert len(study.trials) == 3


def test_the_brute_force_sampler_needs_a_finite_space_that_holds_the_budget() -> None:
    error = error_of(custom_spec(sampler={"type": "BruteForce"}, trials={"total": 4}))
    assert error.field == "spec.searchSpace[0]" and "the BruteForce sampler needs discrete values" in str(
        error
    )
    space = [{"name": "n", "type": "int", "low": 1, "high": 4}]
    error = error_of(custom_spec(*space, sampler={"type": "BruteForce"}, trials={"total": 5}))
    assert error.field == "spec.trials.total"
    assert "5 trials but the BruteForce sampler's space has only 4 points" in str(error)
    parse_spec(custom_spec(*space, sampler={"type": "BruteForce"}, trials={"total": 4}))


def test_the_gp_sampler_is_refused_where_torch_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    error = error_of(custom_spec(sampler={"type": "GP"}))
    assert error.field == "spec.sampler.type"
    assert "the GP sampler needs torch" in str(error) and "operator image" in str(error)


def test_a_range_not_a_multiple_of_its_step_is_cut_as_optuna_cuts_it_and_said_not_warned(
    recwarn: pytest.WarningsRecorder,
) -> None:
    spec = parse_spec(
        custom_spec(searchSpace=[{"name": "x", "type": "float", "low": 0.1, "high": 1.0, "step": 0.2}])
    )
    dist = ss.distributions(spec)["x"]
    assert (dist.low, dist.high, dist.step) == (0.1, 0.9, 0.2)  # type: ignore[attr-defined]
    assert not [w for w in recwarn.list if "not divisible" in str(w.message)]  # said in the notes instead
    (note,) = ss.notes(spec).space
    assert note.path == "spec.searchSpace[0].step"
    assert "Optuna searches [0.1, 0.9] and never tries 1.0; make high 0.9 or 1.1" in note.message
    # A range that is a multiple (as written, not as floats add up): nothing to say.
    exact = parse_spec(
        custom_spec(searchSpace=[{"name": "x", "type": "float", "low": 0.1, "high": 0.7, "step": 0.3}])
    )
    assert ss.notes(exact).space == () and ss.distributions(exact)["x"].high == 0.7  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("param", "message"),
    [
        (
            {"name": "x", "type": "float", "low": 0.0, "high": 0.2, "step": 0.5},
            "spec.searchSpace[0].step: 0.5 is larger than the range [0.0, 0.2] (0.2 wide): Optuna would "
            "narrow it to the single value 0.0 and never search it; make step at most 0.2",
        ),
        (
            {"name": "n", "type": "int", "low": 1, "high": 3, "step": 5},
            "spec.searchSpace[0].step: 5 is larger than the range [1, 3] (2 wide)",
        ),
    ],
)
def test_a_step_larger_than_its_range_is_refused(param: dict[str, Any], message: str) -> None:
    error = error_of(custom_spec(searchSpace=[param]))
    assert str(error).startswith(message), str(error)
    # A step as wide as the range gives two values: accepted.
    parse_spec(
        custom_spec(searchSpace=[{"name": "x", "type": "float", "low": 0.1, "high": 0.3, "step": 0.2}])
    )


def test_every_warning_optuna_raises_when_the_sampler_is_tried_is_a_note() -> None:
    raw = custom_spec(
        searchSpace=[{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        sampler={"type": "QMC", "options": {"scramble": True}},  # no seed: each rebuild draws its own
    )
    notes = ss.notes(parse_spec(raw))
    (note,) = notes.sampler
    assert note.path == "spec.sampler"
    assert note.message.startswith(
        "Optuna warned when the QMC sampler was tried: No seed is provided for `QMCSampler`"
    )
    raw["sampler"] = {"type": "CMAES", "options": {"sigma0": 0.3}}  # deprecated: a FutureWarning
    notes = ss.notes(parse_spec(raw))
    assert [n.message for n in notes.sampler if "sigma0" in n.message] == [
        "Optuna warned when the CMAES sampler was tried: `sigma0` has been deprecated in v4.9.0. This "
        "feature will be removed in v6.0.0. See https://github.com/optuna/optuna/releases/tag/v4.9.0."
    ]
    # CMA-ES over one parameter samples it as over any space; the run's first trial (sampled
    # independently by every sampler) is no cause for a note.
    raw["sampler"] = {"type": "CMAES"}
    assert ss.notes(parse_spec(raw)).sampler == ()


def test_the_trial_runs_capture_keeps_to_its_own_thread(caplog: pytest.LogCaptureFixture) -> None:
    """The operator tries samplers on many threads: what another thread logs or warns while one runs
    reaches its usual place, and only the running thread's warnings become notes."""
    import logging
    import threading
    import warnings

    logger = logging.getLogger("optuna.samplers._tpe.sampler")
    sink: list[str] = []
    other: list[warnings.WarningMessage] = []

    def elsewhere() -> None:
        logger.warning("from another thread")

    with caplog.at_level("WARNING", logger="optuna"), warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with ss._captured(sink):
            logger.warning("from the trial run")
            warnings.warn("a warning of the trial run", UserWarning, stacklevel=1)
            thread = threading.Thread(target=elsewhere)
            thread.start()
            thread.join()
        other = list(shown)
    assert sink == ["from the trial run", "a warning of the trial run"]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("optuna")] == ["from another thread"]
    assert not [w for w in other if "trial run" in str(w.message)]
