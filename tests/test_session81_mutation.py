"""Session 81 mutation pass: tests that kill the mutants of the session's library changes
(``git diff 7609309..HEAD -- transferkit/``) that the existing tests let live."""

import warnings

import numpy as np
import pytest

from transferkit.errors import TransferkitWarning


def _messages(caught) -> list[str]:
    return [str(w.message) for w in caught]


# ---- rundata._own_test_overlap: one kind of copy alone is warned of, and only the kinds found are named ----------

def test_copies_inside_the_target_alone_are_warned_of_naming_only_the_target(tmp_path):
    from transferkit.config import ExperimentConfig
    from transferkit.rundata import prepare_domains
    rng = np.random.default_rng(0)
    x, y = rng.random((30, 8, 8)).astype("float32"), np.repeat(np.arange(3), 10)
    np.savez(tmp_path / "twice.npz", x=np.concatenate([x, x]), y=np.concatenate([y, y]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_domains(ExperimentConfig(source="digits", source_classes="0-2", target=f"npz:{tmp_path / 'twice.npz'}",
                                         k=1))
    said = [m for m in _messages(caught) if "test images," in m and "pixel for pixel" in m]
    assert len(said) == 1  # the source (digits) holds none of them: the target's own copies are enough
    assert "are target train images" in said[0]
    assert "source" not in said[0].split("(pixel for pixel")[0]  # no "0 are source train images"
    assert " 0 are " not in said[0]


# ---- run_benchmark forgets the links warned of, as run_experiment does ------------------------------------------

def test_a_benchmark_after_a_warning_of_a_link_is_told_of_it_again(tmp_path, monkeypatch):
    from helpers import linked_img_folder

    import transferkit.bench as bench
    top, elsewhere, warned = linked_img_folder(tmp_path)
    warned()
    assert warned() == 0
    row = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
    monkeypatch.setitem(bench.BENCHMARKS, "link_toy", (lambda plan, bench_dir, log: [row], "toy", bench.Plan))
    bench.run_benchmark("link_toy", out_dir=str(tmp_path / "runs"), log=lambda *a: None)
    assert warned() == 1  # the benchmark started with forget_warned_links
    assert (elsewhere / "a.png").read_text() == "keep me"


# ---- tables.setting_text: the span over seeds, a count only where the seeds agree, a summary's own run ------------

_ALL = {"method": "finetune", "source": "s", "target": "t", "setting": "all", "accuracy": 0.5, "wall_s": 1.0}


def test_setting_all_spans_the_fewest_and_most_over_seeds():
    from transferkit.tables import setting_text
    rows = [{**_ALL, "seed": 0, "n_labeled": 8, "labels_per_class": [3, 5]},
            {**_ALL, "seed": 1, "n_labeled": 10, "labels_per_class": [4, 6]}]
    assert setting_text({**_ALL}, rows) == "all (3-6 per class)"


def test_setting_all_gives_no_count_where_the_seeds_disagree():
    from transferkit.tables import setting_text
    rows = [{**_ALL, "seed": 0, "n_labeled": 8}, {**_ALL, "seed": 1, "n_labeled": 9}]
    assert setting_text({**_ALL}, rows) == "all"
    assert setting_text({**_ALL}, rows[:1]) == "all (8 labels in all)"


def test_setting_all_reads_the_rows_of_the_summary_s_own_run():
    from transferkit.tables import setting_text
    rows = [{**_ALL, "seed": 0, "run": "a", "n_labeled": 8, "labels_per_class": [4, 4]},
            {**_ALL, "seed": 0, "run": "b", "n_labeled": 4, "labels_per_class": [2, 2]}]
    assert setting_text({**_ALL, "run": "a"}, rows) == "all (4 per class)"
    assert setting_text({**_ALL, "run": "b"}, rows) == "all (2 per class)"


# ---- cli._run_config: a --set of a flag's key with the flag's value is dropped, not given twice -----------------

def test_a_set_agreeing_with_its_flag_is_not_given_twice():
    from transferkit import cli
    args = cli.build_parser().parse_args(["run", "--set", "out_dir=2026", "--out", "2026"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = cli._run_config(args)
    assert cfg.out_dir == "2026"
    assert not [m for m in _messages(caught) if "given 2 times" in m or "wins over" in m]


# ---- plots: a per-unit figure's description ends with its title ---------------------------------------------------

def test_a_per_unit_figure_s_description_names_its_title(tmp_path):
    from PIL import Image

    from transferkit import plots
    rows = [{"unit": "a", "svm_accuracy": 0.4}, {"unit": "b", "svm_accuracy": 0.6}]
    path = plots.per_unit_accuracy_plot(rows, tmp_path / "per_unit_x.png", title="mnist to usps")
    with Image.open(path) as im:
        said = im.info.get(plots.DESCRIPTION_KEY)
    assert said == "test accuracy of each tap classifier per tapped unit, mnist to usps"
    path = plots.per_unit_accuracy_plot(rows, tmp_path / "per_unit_y.png")
    with Image.open(path) as im:
        assert im.info.get(plots.DESCRIPTION_KEY) == "test accuracy of each tap classifier per tapped unit"


# ---- transferkit bench: the table once, on stdout; stderr has the progress alone ----------------------------------

def test_the_bench_command_prints_its_table_on_stdout_only(tmp_path, monkeypatch, capsys):
    import transferkit.bench as bench
    from transferkit.cli import main
    row = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
    monkeypatch.setitem(bench.BENCHMARKS, "table_toy", (lambda plan, bench_dir, log: [row], "toy", bench.Plan))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["bench", "table_toy", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.count("| m ") == 1
    assert "| m " not in err


# ---- engine.check_rate: 2**64 itself is the largest rate taken ----------------------------------------------------

def test_a_rate_of_exactly_two_to_the_64_is_taken():
    from transferkit.engine import LARGEST_RATE, TrainConfig, check_rate
    from transferkit.errors import TransferkitError
    check_rate(2.0**64)
    check_rate(2.0**64, "weight_decay", zero_ok=True)
    assert TrainConfig(lr=LARGEST_RATE, weight_decay=LARGEST_RATE).lr == 2.0**64
    with pytest.raises(TransferkitError, match="at most 2"):
        check_rate(2.0**64 * (1 + 2**-52))


# ---- experiment.run_job: labels_per_class only on the rows of jobs that read target labels ------------------------

def test_labels_per_class_only_on_rows_that_read_target_labels(tmp_path, monkeypatch):
    from helpers import toy_named_domains

    from transferkit.config import load_config
    from transferkit.experiment import run_experiment
    toy_named_domains(monkeypatch)
    cfg = load_config(None, [f"out_dir={tmp_path / 'runs'}", "source=digits", "target=mnist",
                             "methods=[dann, target_only]", "k=2", "repeats=1", "train.steps=2",
                             "pretrain.steps=2", "train.batch_size=8", "select_on=none", "train.progress=false"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferkitWarning)
        rows = run_experiment(cfg, log=None)[1]
    by = {r["method"]: r for r in rows}
    assert "labels_per_class" not in by["dann"] and by["dann"]["n_labeled"] == 0  # unlabelled target batches only
    assert by["target_only"]["labels_per_class"] == [2, 2]


# ---- fewshot_eval.run_episodes hands its device on to the heads ---------------------------------------------------

def test_run_episodes_computes_the_heads_on_its_device(tmp_path, monkeypatch):
    import torch

    from transferkit import fewshot_eval
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import run_experiment
    cfg = ExperimentConfig(name="fs", source="digits", target="digits", source_classes="0-4", target_classes="5-9",
                           methods=["linear_probe"], k=2, repeats=1, select_on="none", out_dir=str(tmp_path),
                           pretrain=TrainConfig(steps=2, eval_every=2), train=TrainConfig(steps=2, eval_every=2))
    run = tmp_path / "fs"
    run_experiment(cfg, run_dir=run, log=None)
    given, real = [], fewshot_eval.evaluate_episodes

    def spy(*a, **kw):
        given.append(kw.get("device"))
        return real(*a, **kw)
    monkeypatch.setattr(fewshot_eval, "evaluate_episodes", spy)
    rows, _ = fewshot_eval.run_episodes(run, None, ["prototype"], 5, [1], 5, 3, 0, lambda *a: None, device="cpu")
    assert rows and given == [torch.device("cpu")]


# ---- bench uda.steps_note: a method with one seed off the budget is named; SKADA's rows are not ---------------------

def _uda_row(method: str, seed: int, steps: int, library: str = "transferkit") -> dict:
    return {"method": method, "seed": seed, "accuracy": 0.5, "wall_s": 1.0, "library": library, "steps": steps}


def test_uda_steps_note_names_a_method_whose_seeds_trained_unalike():
    from transferkit.bench import uda
    note = uda.steps_note([_uda_row("dann", 0, 322), _uda_row("dann", 1, 200), _uda_row("mmd", 0, 322)], 322)
    assert note == " Not the same steps: `dann` 261 (mean steps per job, every stage counted)."


def test_uda_steps_note_leaves_out_the_skada_rows():
    from transferkit.bench import uda
    rows = [_uda_row("dann", 0, 322), _uda_row("skada:DANN", 0, 50, "skada")]
    assert uda.steps_note(rows, 322) == ""


# ---- bench flex.steps_line: given where some methods record steps, naming those -------------------------------------

def test_flex_steps_line_names_the_methods_that_record_steps_where_others_do_not():
    from transferkit.bench import flex
    rows = [{"method": "flex", "steps": 900}, {"method": "flex", "steps": 1100}, {"method": "ft_all"}]
    line = flex.steps_line(rows)
    assert len(line) == 1 and line[0].startswith("Mean training steps per job, every training counted (flex 1000): ")
    assert flex.steps_line([{"method": "flex"}]) == []


# ---- report.saved_figure_caption: a figure neither described nor known by name is still said to be one ------------

def test_a_figure_of_no_description_nor_known_name_is_a_figure_the_run_saved():
    from transferkit.report import saved_figure_caption
    assert saved_figure_caption("img/other.png", b"not a png") == "a figure the run saved (img/other.png)"
    assert saved_figure_caption("tsne_x.png", b"") == "t-SNE of source and target embeddings (tsne_x.png)"


# ---- plots.tsne_embeddings: panel names are described where any panel has one ---------------------------------------

def test_a_t_sne_description_names_the_panels_where_one_has_a_name(tmp_path):
    import torch
    from PIL import Image

    from transferkit import plots
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, 3, generator=g)
    path = plots.tsne_embeddings({"": feats, "after": feats}, tmp_path / "t.png")
    with Image.open(path) as im:
        said = im.info.get(plots.DESCRIPTION_KEY)
    assert said.startswith("t-SNE of embeddings, panels: ") and said.endswith("after")
    path = plots.tsne_embeddings(feats, tmp_path / "u.png")  # one unnamed panel: none named
    with Image.open(path) as im:
        assert im.info.get(plots.DESCRIPTION_KEY) == "t-SNE of embeddings"


# ---- fewshot_eval._fit_head: every tensor of the fit on the support's device (meta: a device this CPU machine has) --

@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_episode_heads_fit_on_the_support_s_device(head):
    import torch

    from transferkit.fewshot_eval import _fit_head
    support = torch.randn(2, 3, 2, 4, generator=torch.Generator().manual_seed(0))
    on_meta = _fit_head(head, support.to("meta"), 2, 0.01, 10.0)
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 3, 5)
    assert _fit_head(head, support, 2, 0.01, 10.0).device.type == "cpu"


# ---- cli._beaten_sets: a --set key written with spaces is still the flag's key ---------------------------------------

def test_device_wins_over_a_stage_device_set_with_spaces_around_its_key():
    from transferkit import cli
    from transferkit.config import ExperimentConfig
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = cli._stage_devices(["train.device = cpu", "steps=1"], "cuda", ExperimentConfig)
    assert out == ["train.device=cuda", "steps=1"]
    assert _messages(caught) == ["--device cuda wins over --set train.device = cpu"]
