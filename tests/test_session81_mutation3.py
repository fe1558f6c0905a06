"""Session 81 mutation pass, part three: tests that kill the mutants of the last fixes
(``git diff 162a319..HEAD -- transferkit/``) that the existing tests let live."""

import dataclasses

import pytest

from transferkit.errors import TransferkitError

# ---- fewshot_eval.run_episodes: the sizes and heads checked before the run's data is read ----------------------


@pytest.fixture
def bare_run(tmp_path, monkeypatch):
    """A folder with a config.yaml whose data must not be read (prepare_domains fails the test)."""
    import transferkit.rundata as rundata
    monkeypatch.setattr(rundata, "prepare_domains", lambda *a, **k: pytest.fail("read the run's data"))
    (tmp_path / "config.yaml").write_text("source: digits\ntarget: digits\n")
    return tmp_path


@pytest.mark.parametrize("given, named", [
    ({"n_way": 1}, "n_way=1"),  # kills: n_way's least 2 made 1
    ({"episodes": 0}, "episodes=0"),  # kills: episodes' least 1 made 0
    ({"k_shots": [1, 0]}, "k_shots=[1, 0]"),  # kills: each k's least 1 made 0
])
def test_episode_sizes_below_their_least_are_refused_before_the_data_is_read(bare_run, given, named):
    import re

    from transferkit.fewshot_eval import run_episodes
    with pytest.raises(TransferkitError, match=rf"^episodes need ints .*; got {re.escape(named)}$"):
        run_episodes(bare_run, log=lambda *a: None, **given)


def test_episodes_of_heads_given_as_an_iterator_score_them(tmp_path):
    # kills: run_episodes checking the heads without keeping check_heads' list (an iterator is then spent)
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import run_experiment
    from transferkit.fewshot_eval import run_episodes
    cfg = ExperimentConfig(name="fs", source="digits", target="digits", source_classes="0-4", target_classes="5-9",
                           methods=["linear_probe"], k=2, repeats=1, select_on="none", out_dir=str(tmp_path),
                           pretrain=TrainConfig(steps=2, eval_every=2), train=TrainConfig(steps=2, eval_every=2))
    run_experiment(cfg, run_dir=tmp_path / "fs", log=None)
    rows, _ = run_episodes(tmp_path / "fs", None, iter(["prototype", "linear"]), 5, [1], 5, 3, 0, lambda *a: None)
    assert sorted(r["method"] for r in rows) == ["linear_probe/linear", "linear_probe/prototype"]


def test_episodes_of_a_folder_names_runs_three_levels_down(tmp_path, capsys):
    # kills: the episodes listing searching 2 levels (an --out folder holding bench-NAME/pair/s0)
    from transferkit.cli import main
    run = tmp_path / "bench-uda" / "pair" / "s0"
    (run / "jobs").mkdir(parents=True)
    (run / "config.yaml").write_text("methods: [source_only]\n")
    assert main(["episodes", str(tmp_path)]) == 2
    assert (f"it holds runs, one directory each (bench-uda/pair/s0): give one, e.g. {run}"
            in capsys.readouterr().err)


# ---- fields / config.override / bench: a plan's field errors name the plan --------------------------------------

@pytest.mark.parametrize("assignment, message", [
    ("train=3", "bench flex plan train must be a mapping of TrainConfig fields, got 3"),  # from_dict's section check
    ("train.lr=abc", "bench flex plan train.lr must be float, got the text 'abc'"),  # a section's field (updated)
    ("train.steps=0", "bench flex plan train: steps must be >= 1, got 0"),  # a section's own check
    ("seeds=null", "bench flex plan seeds may not be null"),
    ("train.lr=null", "bench flex plan train.lr may not be null"),
    ("seeds=[]", "bench flex plan seeds must be int, got []"),
])
def test_every_field_error_of_a_plan_names_the_plan(assignment, message):
    from transferkit.bench import make_plan
    with pytest.raises(TransferkitError) as e:
        make_plan("flex", True, [assignment])
    assert str(e.value).startswith(message) and "config" not in str(e.value), str(e.value)


def test_from_dict_names_what_it_builds_when_not_a_mapping_or_not_built():
    # kills: from_dict's "must be a mapping" and "bad ..." messages keeping "config" whatever `what` says
    from transferkit.bench.flex import FlexPlan
    from transferkit.fields import from_dict

    @dataclasses.dataclass
    class Needs:
        size: int

    with pytest.raises(TransferkitError, match=r"^bench flex plan must be a mapping, got list$"):
        from_dict(FlexPlan, [], what="bench flex plan")
    with pytest.raises(TransferkitError, match=r"^bad toy plan: .*size"):
        from_dict(Needs, {}, what="toy plan")


def test_a_resumed_plan_s_set_errors_name_the_plan(tmp_path):
    # kills: the resumed directory's override (bench._resumed_selection) dropping the plan's label
    from transferkit.bench import PLAN_OWNER, make_plan, resumed_plan
    from transferkit.io import write_json
    write_json(tmp_path / "plan.json", {PLAN_OWNER: "flex", **dataclasses.asdict(make_plan("flex", True))})
    with pytest.raises(TransferkitError, match=r"^bench flex plan seeds must be int, got the text '0,1'"):
        resumed_plan("flex", True, ["seeds=0,1"], run_dir=tmp_path)


# ---- tables.labels_used: a labels_per_class that is no [fewest, most] pair is not read -------------------------

def test_labels_used_reads_no_span_of_another_length():
    # kills: `len(v) == 2` made `len(v) >= 2`
    from transferkit.tables import labels_used
    rows = [{"n_labeled": 12, "labels_per_class": [3, 4, 5]}, {"n_labeled": 12, "labels_per_class": [3, 5]}]
    assert labels_used(rows) == {"labels_per_class": None, "labels_in_all": 12}
    assert labels_used(rows[1:]) == {"labels_per_class": [3, 5], "labels_in_all": 12}


# ---- results.runs_inside / unfinished_hint ----------------------------------------------------------------------

def test_runs_inside_names_a_benchmark_not_the_runs_it_holds(tmp_path):
    # kills: the filter of directories inside another found one dropped
    from transferkit.results import runs_inside
    (tmp_path / "bench" / "run").mkdir(parents=True)
    (tmp_path / "bench" / "plan.json").write_text("{}")
    (tmp_path / "bench" / "run" / "config.yaml").write_text("k: 1\n")
    (tmp_path / "solo").mkdir()
    (tmp_path / "solo" / "config.yaml").write_text("k: 1\n")
    assert runs_inside(tmp_path) == ["bench", "solo"]


def test_the_unfinished_hint_lists_runs_two_levels_down_only(tmp_path):
    # kills: unfinished_hint listing three levels (runs_inside(run_dir, depth=3))
    from transferkit.results import unfinished_hint
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "config.yaml").write_text("k: 1\n")
    assert unfinished_hint(tmp_path) == ""
    (tmp_path / "a" / "b" / "config.yaml").write_text("k: 1\n")
    assert unfinished_hint(tmp_path).endswith(f"(a/b): give one, e.g. {tmp_path / 'a' / 'b'}")


# ---- io.links_warned_once / forget_warned_links -----------------------------------------------------------------

@pytest.fixture
def linked(tmp_path, monkeypatch):
    """(remove, said): removing a file through a linked folder warns; said collects the warnings."""
    from transferkit import io
    top, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    (elsewhere / "figs").mkdir(parents=True)
    top.mkdir()
    (top / "figs").symlink_to(elsewhere / "figs")
    (elsewhere / "figs" / "old.png").write_bytes(b"x")  # kept: remove_inside removes nothing outside the run
    said = []
    monkeypatch.setattr(io, "warn", lambda message, *a, **k: said.append(message))
    io.forget_warned_links()
    return (lambda: io.remove_inside(top / "figs" / "old.png", top)), said


def test_forget_warned_links_inside_a_run_forgets_the_run_s_links(linked):
    # kills: forget_warned_links clearing the links warned of outside any run instead of the run's
    from transferkit import io
    remove, said = linked
    with io.links_warned_once():
        remove()
        io.forget_warned_links()
        remove()
    assert len(said) == 2


def test_a_call_after_a_run_is_told_of_the_run_s_link_again(linked):
    # kills: the run's scope keeping its links in the set of calls outside any run
    from transferkit import io
    remove, said = linked
    with io.links_warned_once():
        remove()
        remove()
    remove()
    remove()
    assert len(said) == 2
