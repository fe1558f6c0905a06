"""Fair-comparison audit of the benchmark tables: where the methods of a table do not get the
same treatment, the table (or its budget line) says so."""

from __future__ import annotations

from transferkit.bench import flex, uda
from transferkit.bench.represent import RepresentPlan
from transferkit.methods import get_method
from transferkit.methods.adaptation import AdaptationMethod


def _uda_row(method: str, seed: int, steps: int, library: str = "transferkit", acc: float = 0.5) -> dict:
    return {"method": method, "seed": seed, "accuracy": acc, "wall_s": 1.0, "library": library, "steps": steps}


def test_uda_adaptation_methods_train_the_budget_in_one_run_unless_listed_as_two_stage():
    # the rule behind the table's "adaptation N steps": one engine run of N steps per method; a method that
    # overrides AdaptationMethod.fit_transfer runs stages of their own and must be named in TWO_STAGE
    for name in uda.ADAPTATION:
        cls = get_method(name)
        assert issubclass(cls, AdaptationMethod), name
        own_stages = cls.fit_transfer is not AdaptationMethod.fit_transfer
        assert own_stages == (name in uda.TWO_STAGE), name


def test_uda_table_names_the_rows_that_trained_other_steps_than_the_adaptation_budget():
    rows = [_uda_row("source_only", s, 1000) for s in (0, 1)] + [_uda_row("dann", s, 322) for s in (0, 1)]
    rows += [_uda_row("adain", s, 644) for s in (0, 1)] + [_uda_row("target_only", s, 1000) for s in (0, 1)]
    text = uda.table3("mnist", "digits", rows, uda.Budget(seeds=(0, 1)), 7, 322)
    head = text.splitlines()[2]
    assert "Not the same steps: `adain` 644 (mean steps per job, every stage counted; `adain`: a translator " \
           "stage, then the task network, each of the 322 adaptation steps)." in head
    assert "`dann` 322" not in head  # dann trained the budget
    assert "source_only` 1000" not in head and "target_only` 1000" not in head  # described by the header already
    same = [r for r in rows if r["method"] != "adain"]
    assert "Not the same steps" not in uda.table3("mnist", "digits", same, uda.Budget(seeds=(0, 1)), 7, 322)


def test_uda_best_of_each_library_by_test_mean_is_said_to_be_biased_upward():
    rows = [_uda_row(m, s, 5, acc=a) for m, a in (("dann", 0.6), ("mmd", 0.7), ("source_only", 0.5)) for s in (0, 1)]
    rows += [_uda_row("skada:DANN", s, 5, "skada", 0.65) for s in (0, 1)]
    lines = uda.issue_checks(rows)
    note = next(line for line in lines if line.startswith("(by test mean)"))
    assert "biased upward" in note and "(3 and 1 here)" in note
    only_ours = [r for r in rows if r["library"] == "transferkit"]
    assert not any(line.startswith("(by test mean)") for line in uda.issue_checks(only_ours))  # no best-vs-best row


def test_flex_table_gives_each_methods_mean_steps_every_training_counted():
    rows = [{"method": m, "target": "t", "ratio": 30, "seed": s, "accuracy": 0.5, "steps": steps}
            for m, steps in zip(flex.METHODS, (1000, 400, 210, 200, 200, 200, 200, 200)) for s in (0, 1)]
    rows += [{**r, "ratio": 3, "steps": 7} for r in rows]  # another ratio's rows: not this table's
    text = flex.table3(rows, {"t": 0.5}, 30)
    line = text.splitlines()[1]
    assert line.startswith("Mean training steps per job, every training counted (flex 1000, fast_flex 400, "
                           "faster_flex 210, ft_fc1 200,")
    assert "flex trains one per candidate (every unit and ft_all)" in line
    assert "| t (50.0) |" in text
    assert flex.table3([{k: v for k, v in r.items() if k != "steps"} for r in rows], {"t": 0.5}, 30).splitlines()[1] \
        == ""  # rows that do not record steps: no line


def test_represent_budget_says_two_stage_trains_twice():
    text = RepresentPlan(train=33).budget()
    assert "transfer up to 33 steps per training (two_stage: two, the network then a new head, up to 66 steps; " \
           "CAT_n's: one per member, then the head)" in text


def test_flex_budget_line_counts_trainings_not_methods():
    # before: "each method up to N steps", which flex (one training per candidate) exceeds by design
    text = flex.plan(False).budget()
    assert "each training up to 300 steps" in text and "each method up to" not in text
    assert text.endswith(f"; {flex.TRAININGS})") and flex.TRAININGS.startswith("flex trains one per candidate")
