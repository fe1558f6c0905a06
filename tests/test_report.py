"""The HTML/markdown report, checked in a real headless browser when Chromium is present."""

import json
import math
import re
import shutil
import subprocess
import tempfile

import pytest
import torch

import transferkit.report as report_module
from transferkit.cli import main
from transferkit.config import ExperimentConfig
from transferkit.engine import TrainConfig
from transferkit.experiment import run_experiment
from transferkit.report import write_report
from transferkit.results import write_results

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """A small real benchmark-like directory: two values of k, two methods."""
    root = tmp_path_factory.mktemp("bench")
    rows = []
    for k in (1, 3):
        cfg = ExperimentConfig(name=f"k{k}", source="digits", target="digits+noise", k=k, repeats=2,
                               methods=["linear_probe", "finetune"], out_dir=str(root),
                               pretrain=TrainConfig(steps=20, eval_every=10), train=TrainConfig(steps=8, eval_every=4))
        rows += run_experiment(cfg, run_dir=root / cfg.name, log=lambda *a: None)[1]
    write_results(root, "bench-test", {"benchmark": "test"}, rows)
    return root


def test_report_has_table_figures_and_markdown(bench_dir):
    html_path, md_path = write_report(bench_dir)
    page = html_path.read_text()
    assert '<table id="results">' in page
    assert page.count("<tr>") == 1 + 4  # header + (2 methods x 2 settings)
    assert "Label efficiency, digits → digits+noise" in page
    assert "Confusion matrices" in page and "Training curves" in page and "peak" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 4 and all(len(i) > 1000 for i in images)
    md = md_path.read_text()
    kernels = f"cpu_capability: {torch.backends.cpu.get_cpu_capability()}"
    for text in (page, md):  # the kernels and versions the numbers came from, under the configuration
        assert "# environment (results.json)" in text and kernels in text
    for name in re.findall(r"\(report_files/(figure\d+\.png)\)", md):
        assert (md_path.parent / "report_files" / name).read_bytes()[:4] == b"\x89PNG"


def test_report_cli_and_missing_results(bench_dir, tmp_path, capsys):
    write_report(bench_dir)  # a report inside the run directory first: its figures are not the run's own
    assert main(["report", str(bench_dir), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").exists()
    ours = sorted(p.name for p in (bench_dir / "report_files").glob("*.png"))
    assert sorted(p.name for p in (tmp_path / "out" / "report_files").glob("*.png")) == ours
    runs = [bench_dir / "k1", bench_dir / "k3"]  # several run directories: one sub-folder each
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "many")]) == 0
    assert (tmp_path / "many" / "k1" / "report.html").exists() and (tmp_path / "many" / "k3" / "report.md").exists()
    assert main(["summary", str(bench_dir)]) == 0  # a directory means its results.json
    assert main(["report", str(bench_dir / "results.json"), "--out", str(tmp_path / "file")]) == 0  # and back
    assert (tmp_path / "file" / "report.html").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "nothing does not exist" in capsys.readouterr().err
    (tmp_path / "nothing").mkdir()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no results.json" in capsys.readouterr().err
    (tmp_path / "half" / "jobs").mkdir(parents=True)  # a run stopped by an error: finished jobs, no results
    (tmp_path / "half" / "jobs" / "finetune-k=1-s0.json").write_text("{}")
    for command in ("report", "summary"):
        assert main([command, str(tmp_path / "half")]) == 2
        assert "holds 1 finished job(s) but is not finished; `transferkit run --resume" in capsys.readouterr().err
    parent = tmp_path / "runs" / "mine"  # the folder of a config's runs, not a run
    for stamp in ("20261201-101500-000001", "20261201-111500-000002"):
        (parent / stamp).mkdir(parents=True)
        (parent / stamp / "config.yaml").write_text("name: mine\n")
    for command in ("report", "summary"):
        assert main([command, str(parent)]) == 2
        assert (f"holds runs, one directory each (20261201-101500-000001, 20261201-111500-000002): give one, e.g. "
                f"{parent / '20261201-111500-000002'}") in capsys.readouterr().err
    killed = parent / "20261201-111500-000002"  # a run killed before its first job (in pre-training)
    for command in ("report", "summary", "episodes"):
        assert main([command, str(killed)]) == 2
        assert (f"{killed} is a run that has finished no job yet; `transferkit run --resume {killed}` goes on with "
                f"it") in capsys.readouterr().err, command
    from transferkit.errors import TransferkitError
    from transferkit.experiment import load_model
    with pytest.raises(TransferkitError, match="is not a run directory .*holds runs, one directory each"):
        load_model(parent, "finetune")


def test_an_unfinished_benchmark_or_run_directory_names_the_command_that_completes_it(tmp_path, capsys):
    bench = tmp_path / "bench-fewshot-quick" / "20261202-040414-165545"  # stopped in its first run, main-k2
    (bench / "main-k2" / "jobs").mkdir(parents=True)
    (bench / "plan.json").write_text(json.dumps({"benchmark": "fewshot", "quick": True, "ks": [2, 5]}))
    (bench / "main-k2" / "config.yaml").write_text("name: main-k2\n")
    (bench / "main-k2" / "jobs" / "target_only-k=2-s0.json").write_text("{}")
    for command in ("report", "summary"):
        assert main([command, str(bench)]) == 2
        err = capsys.readouterr().err
        assert (f"{bench} is a benchmark directory that is not finished (it holds 1 finished job(s)); "
                f"`transferkit bench fewshot --quick --resume {bench}` completes it") in err, err
        assert "transferkit run" not in err and "not a finished run or benchmark directory" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert f"no results.json in {empty}: not a run or benchmark directory" in capsys.readouterr().err
    run = tmp_path / "runs" / "mine" / "20261201-101500-000001"
    (run / "jobs").mkdir(parents=True)
    (run / "config.yaml").write_text("name: mine\n")
    (run / "jobs" / "finetune-k=1-s0.json").write_text("{}")
    for command in ("report", "summary"):
        assert main([command, str(run)]) == 2
        err = capsys.readouterr().err
        assert f"`transferkit run --resume {run}` completes it" in err and "transferkit bench" not in err, err
    (run / "jobs" / "finetune-k=1-s0.json").write_text('{"world_size": 2}')  # a run of --nproc 2 resumes under it
    assert main(["summary", str(run)]) == 2
    assert f"`transferkit run --nproc 2 --resume {run}` completes it" in capsys.readouterr().err


def test_report_in_headless_chromium(bench_dir):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (make test installs Debian's chromium when it can); "
                    "the browser check of the report did not run")
    html_path, _ = write_report(bench_dir)
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp()}",
                          "--virtual-time-budget=5000", "--dump-dom", html_path.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, "the page did not load"
    n_images = len(re.findall(r"<img ", html_path.read_text()))
    assert f'data-images="{n_images}"' in body.group(0)
    assert 'data-broken-images="0"' in body.group(0)
    assert '<table id="results">' in dom and "finetune" in dom


def test_a_report_of_rows_with_other_class_sets_and_no_memory_figures(tmp_path):
    import json
    base = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "accuracy": 0.5, "wall_s": 1.0,
            "peak_rss_mb": None}
    rows = [{**base, "seed": 0, "confusion": [[1, 0], [0, 1]]},
            {**base, "seed": 1, "confusion": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": rows}))
    html, _ = write_report(run, tmp_path / "out")
    assert html.stat().st_size > 0


def test_label_efficiency_reads_the_per_class_settings_of_bench_represent():
    from transferkit.report import label_efficiency_figures
    rows = [{"method": "erm/finetune", "source": "mnist", "target": "digits", "setting": f"{n}/class", "seed": s,
             "accuracy": 0.5 + n / 100 + s / 100, "wall_s": 1.0} for n in (2, 5) for s in (0, 1)]
    rows.append({**rows[0], "setting": "5-way 1-shot"})  # an episodic row is no point of the curve
    assert [cap for cap, _ in label_efficiency_figures(rows)] == ["Label efficiency, mnist → digits"]


def test_per_unit_figures_flatten_tap_scores_and_keep_sources_apart():
    from transferkit.report import per_unit_figures
    base = {"method": "tap", "target": "mnist", "setting": "k=5", "seed": 0, "accuracy": 0.5, "wall_s": 1.0,
            "tap_unit": "fc1", "tap_val_accuracy": {"conv1": {"svm": 0.4, "softmax": 0.5},
                                                    "fc1": {"svm": 0.7, "softmax": 0.6}}}
    rows = [{**base, "source": "digits"}, {**base, "source": "syndigits"},
            {**base, "source": "usps", "tap_val_accuracy": {"conv1": {"svm": "x"}}}]  # not numbers: no figure
    caps = [cap for cap, _ in per_unit_figures(rows)]
    assert caps == ["tap_val_accuracy per unit, digits → mnist (k=5)",
                    "tap_val_accuracy per unit, syndigits → mnist (k=5)"]
    from transferkit.report import _unit_values
    assert _unit_values(base["tap_val_accuracy"]) == {"svm": {"conv1": 0.4, "fc1": 0.7},
                                                      "softmax": {"conv1": 0.5, "fc1": 0.6}}
    assert _unit_values({"conv1": 0.5, "all": 0.7}) == {None: {"conv1": 0.5, "all": 0.7}}  # flex: one series


def test_a_tap_figure_draws_one_line_per_classifier_across_the_units_with_its_pick(monkeypatch):
    import transferkit.report as report
    drawn = []
    monkeypatch.setattr(report, "_figure", lambda: drawn.append(report.new_figure(6.4, 3.8)) or drawn[-1])
    rows = [{"method": "tap", "source": "s", "target": "t", "setting": "k=5", "seed": s, "accuracy": 0.5,
             "wall_s": 1.0, "tap_unit": "fc1", "tap_classifier": "softmax",
             "tap_val_accuracy": {"conv1": {"svm": 0.4, "softmax": 0.5}, "fc1": {"svm": 0.7, "softmax": 0.6 + s / 10}}}
            for s in (0, 1)]
    assert len(report.per_unit_figures(rows)) == 1
    ax = drawn[0].axes[0]
    lines = {ln.get_label(): ln for ln in ax.lines if not ln.get_label().startswith("_")}
    assert set(lines) == {"tap: softmax", "tap: svm", "tap: softmax: picked"}
    assert list(lines["tap: svm"].get_ydata()) == pytest.approx([40.0, 70.0])  # conv1 then fc1, not classifiers
    assert list(lines["tap: softmax"].get_ydata()) == pytest.approx([50.0, 65.0])
    assert list(lines["tap: softmax: picked"].get_ydata()) == pytest.approx([65.0])


# ---- review of 2026-11-30: names with '$', figures left out, per-unit union, styles, confusion labels, memory

REVIEW_ROW = {"source": "s", "target": "t", "setting": "k=1", "accuracy": 0.5, "wall_s": 1.0}


def _capture(monkeypatch):
    figs = []
    orig = report_module._png
    monkeypatch.setattr(report_module, "_png", lambda fig, **kw: (figs.append(fig), orig(fig, **kw))[1])
    return figs


def test_per_unit_figures_average_each_unit_over_the_seeds_that_have_it(monkeypatch):
    figs = _capture(monkeypatch)
    rows = [{**REVIEW_ROW, "method": "m", "seed": 0, "acc": {"a": 0.1, "b": 0.2}},
            {**REVIEW_ROW, "method": "m", "seed": 1, "acc": {"a": 0.1, "b": 0.2, "c": 0.9}}]
    report_module.per_unit_figures(rows)
    (line,) = figs[-1].axes[0].lines
    assert list(map(str, line.get_xdata())) == ["a", "b", "c"] and line.get_ydata()[2] == 90.0  # in %


def test_memory_panel_does_not_draw_a_missing_measurement_as_zero(monkeypatch):
    figs = _capture(monkeypatch)
    report_module.cost_figure([], [{**REVIEW_ROW, "method": "a", "seed": 0, "peak_rss_mb": 900.0},
                                   {**REVIEW_ROW, "method": "b", "seed": 0}])
    widths = [p.get_width() for p in figs[-1].axes[1].patches]
    assert widths[0] == 900.0 and len(widths) == 2 and math.isnan(widths[1])  # b's bar: none drawn, not 0


def test_label_efficiency_series_are_distinguishable_beyond_ten_methods(monkeypatch):
    figs = _capture(monkeypatch)
    report_module.label_efficiency_figures([{**REVIEW_ROW, "method": f"m{i:02d}", "setting": f"k={k}", "seed": 0}
                                for i in range(12) for k in (1, 2)])
    styles = [(c.lines[0].get_color(), c.lines[0].get_marker()) for c in figs[-1].axes[0].containers]
    assert len(set(styles)) == 12
    ax = figs[-1].axes[0]  # k = 1, 2: no tick at 1.5 (a trial)
    assert all(float(t).is_integer() for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1])


def test_confusion_labels_follow_each_rows_class_names(monkeypatch):
    figs = _capture(monkeypatch)
    rows = [{**REVIEW_ROW, "seed": 0, "method": "a", "confusion": [[3, 1], [0, 4]], "class_names": ["cat", "dog"]},
            {**REVIEW_ROW, "seed": 0, "method": "b", "confusion": [[2, 2], [1, 3]], "class_names": ["car", "bus"]}]
    report_module.confusion_figures(rows)
    labels = {t.get_text() for f in figs for ax in f.axes for t in ax.get_xticklabels()}
    assert {"cat", "dog", "car", "bus"} <= labels


def test_report_survives_dollar_signs_in_names(tmp_path):
    rows = [{**REVIEW_ROW, "seed": 0, "method": "cost_$_per_$", "confusion": [[1, 0], [0, 1]],
             "class_names": ["US$_total_$", "b"]}]
    (tmp_path / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": rows}))
    report_module.write_report(tmp_path)


def test_report_says_when_figures_are_left_out(tmp_path):
    rows = [{**REVIEW_ROW, "method": "m", "seed": 0, "setting": f"k={k}",
             **{f"u{j}_acc": {"a": 0.1, "b": 0.2} for j in range(4)}} for k in range(1, 8)]  # 28 groups > 24
    (tmp_path / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": rows}))
    page = report_module.write_report(tmp_path)[0].read_text()
    assert "4 more per-unit figures not shown" in page


def test_the_report_says_what_its_accuracy_column_holds_and_escapes_markdown(tmp_path):
    import json

    from transferkit.report import metric_note
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    base = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "accuracy": 0.5, "wall_s": 1.0}
    assert "target test accuracy" in metric_note([base])
    assert "target validation accuracy" in metric_note([{**base, "split": "val"}])
    mixed = [{**base, "seed": 0, "setting": "gzsl"}, {**base, "seed": 0, "setting": "i2t (x)"},
             {**base, "seed": 1, "ci95": 0.01}]
    note = metric_note(mixed)
    assert "95 % interval" in note and "Recall@1" not in note  # the lines under the table say the other metrics
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": mixed}))
    write_report(tmp_path / "mixed")
    md = (tmp_path / "mixed" / "report.md").read_text()
    assert md.count("Recall@1") == 1 and md.count("harmonic mean H") == 1  # once each (the report said them twice)
    rows = [{**base, "seed": 0, "method": "m|x", "target": "t\nu"},
            {**base, "seed": 0, "setting": "5-way", "ci95": 0.02}]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": rows}))
    write_report(run, tmp_path / "out")
    md = next((tmp_path / "out").rglob("report.md")).read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert {line.count(" | ") for line in table} == {len(table[0].split(" | ")) - 1}  # every row has every column
    assert "m\\|x" in md and "(95 %: ± 2.0)" in md
    lines = markdown_table(summarize(rows)).splitlines()
    assert len(lines) == 6 and "t u" in lines[2] and "(95 %: ± 2.0)" in lines[3] and "95 % interval" in lines[5]


def test_one_seed_has_no_standard_error_in_results_json_and_its_readers_take_that(tmp_path):
    import json

    from transferkit.results import write_results
    from transferkit.tables import markdown_table
    base = {"method": "m", "source": "s", "target": "t", "seed": 0, "wall_s": 1.0}
    rows = [{**base, "setting": "k=1", "accuracy": 0.5}, {**base, "setting": "k=5", "accuracy": 0.7},
            {**base, "setting": "gzsl", "accuracy": 0.4, "seen_accuracy": 0.6, "unseen_accuracy": 0.3,
             "h_accuracy": 0.4, "group_accuracy": 0.5}]
    write_results(tmp_path, "one-seed", {}, rows)
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert [s["accuracy_se"] for s in summary] == [None, None, None]
    assert summary[2]["h_accuracy_se"] is None and summary[2]["group_accuracy_se"] is None
    assert "| m | s | t | k=1 | 50.0 | – | – | 1 |" in markdown_table(summary, rows)
    assert "| m | s | t | gzsl | 40.0 | 50.0 | 60.0 / 30.0: 40.0 | 1 |" in markdown_table(summary, rows)
    html, md = write_report(tmp_path, tmp_path / "report")  # the label-efficiency plot of k=1, k=5
    assert "Label efficiency" in md.read_text() and "| k=1 | 50.0 | – | – | 1 |" in md.read_text()
    assert "| gzsl | 40.0 | 50.0 | 60.0 / 30.0: 40.0 | 1 |" in md.read_text()  # transferkit report dropped it
    assert "seen / unseen classes: H (%)" in html.read_text()
    for text in (md.read_text(), markdown_table(summary, rows)):  # per class vs per image; H per seed
        assert "each test image once" in text and "mean over seeds of each seed's harmonic mean" in text


def test_results_table_says_what_plus_minus_means_where_a_cell_has_one():
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    base = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
    note = "Mean ± standard error over n seeds (label subsets)."
    assert note not in markdown_table(summarize([base]), [base])  # one seed: no ±
    rows = [base, {**base, "seed": 1, "accuracy": 0.7}, {**base, "setting": "k=5"}]
    text = markdown_table(summarize(rows), rows)
    assert "| m | s | t | k=1 | 60.0 ± 10.0 | 2 | 1.0 |" in text and text.endswith(f"\n\n{note}\n")
    assert len([line for line in text.splitlines() if line.startswith("|")]) == 4


def test_results_table_says_which_rows_hold_another_metric_than_accuracy():
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    base = {"method": "m", "source": "s", "target": "t", "setting": "zsl", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
    assert "other metrics" not in markdown_table(summarize([base]), [base])
    rows = [base, {**base, "setting": "gzsl"}, {**base, "setting": "t2i (mnist captions)"}]
    text = markdown_table(summarize(rows), rows)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 5 and table[0] == "| method | source | target | setting | target accuracy (%) | n | wall s |"
    assert text.endswith("\n\nThe target accuracy column holds other metrics on some rows: GZSL rows: the harmonic "
                         "mean H of seen and unseen accuracy; retrieval rows (i2t, t2i): Recall@1.\n")
    gzsl = [base, {**base, "setting": "gzsl_prior"}]
    assert "Recall@1" not in markdown_table(summarize(gzsl), gzsl) and "harmonic mean H" in markdown_table(
        summarize(gzsl), gzsl)


def test_summarize_averages_only_the_numbers_of_an_extra_key():
    from transferkit.results import summarize

    row = {"method": "m", "source": "s", "target": "t", "setting": "-", "accuracy": 0.5, "wall_s": 1.0}
    rows = [{**row, "seed": 0, "val_accuracy": None}, {**row, "seed": 1, "val_accuracy": 0.8}]
    assert summarize(rows, ("val_accuracy",))[0]["val_accuracy"] == 0.8  # float(None) crashed
    assert "val_accuracy" not in summarize([rows[0]], ("val_accuracy",))[0]


def test_markup_in_names_is_escaped_and_the_header_names_a_validation_split(tmp_path):
    from transferkit.errors import TransferkitError
    from transferkit.results import read_results, summarize
    from transferkit.tables import markdown_table, md_cell
    assert md_cell("x<b>y</b> a*b* c|d [e](f) `g` h\\i ft_unit:conv1") == \
        "x\\<b\\>y\\</b\\> a\\*b\\* c\\|d \\[e\\](f) \\`g\\` h\\\\i ft_unit:conv1"
    assert md_cell("mnist[0-6]") == "mnist[0-6]"  # no link: printed as text by `summary`, it stays readable
    base = {"method": "m", "source": "s", "target": "t]y", "setting": "k=1", "accuracy": 0.5, "wall_s": 1.0, "seed": 0,
            "confusion": [[1, 0], [0, 1]], "class_names": ["a", "b"]}  # a confusion figure, captioned with the target
    assert "| target validation accuracy (%) |" in markdown_table(summarize([{**base, "split": "val"}]),
                                                                  [{**base, "split": "val"}])
    assert "| target accuracy (%) |" in markdown_table(summarize([base]), [base])
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": [base]}))
    write_report(run, tmp_path / "out")
    md = next((tmp_path / "out").rglob("report.md")).read_text()
    # the alt text, the caption with what the colours and numbers hold, is not cut at the name's ]
    assert re.search(r"!\[Confusion matrices, s → t\\\]y \(k=1\); colour: row-normalised[^]]*\]\(report_files/", md)
    for bad in (float("nan"), True, 1.5):
        (run / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": [
            {**base, "group_accuracy": bad}]}))
        with pytest.raises(TransferkitError, match="has group_accuracy .*; it is a fraction in \\[0, 1\\] or null"):
            read_results(run / "results.json")


def test_training_curves_give_a_method_one_colour_in_both_panels_and_name_the_jobs_drawn(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(report_module, "_png", lambda fig: drawn.append(fig) or b"png")
    records = [{"method": "dann", "run": "dann-k=1-s0/main", "step": 10, "loss": 2.8},  # no validation: loss only
               {"method": "finetune", "run": "finetune-k=1-s0/main", "step": 10, "loss": 0.5, "val_accuracy": 0.7},
               {"method": "target_only", "run": "target_only-k=1-s0/main", "step": 10, "loss": 0.4,
                "val_accuracy": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (caption, _), = report_module.training_curve_figures(tmp_path)
    assert caption.endswith("first run of each method: dann-k=1-s0, finetune-k=1-s0, target_only-k=1-s0)")
    loss_axis, acc_axis = drawn[0].axes
    colour = {line.get_label(): line.get_color() for line in loss_axis.lines}
    assert len(set(colour.values())) == 3 and all(line.get_color() == colour[line.get_label()]
                                                  for line in acc_axis.lines)
    assert [t.get_text() for t in loss_axis.get_legend().get_texts()] == ["dann", "finetune", "target_only"]


def test_training_curves_name_flex_s_candidates_by_the_job_and_its_stage(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(report_module, "_png", lambda fig: drawn.append(fig) or b"png")
    records = [{"method": m, "run": f"flex-k=5-s{seed}/cand-{c}", "step": step, "loss": 1.0, "val_accuracy": 0.5}
               for seed in (0, 1) for m, c in (("ft_unit", "conv1"), ("ft_unit", "conv3"), ("ft_all", "all"))
               for step in (5, 10)]
    records += [{"method": "dann", "run": "dann-k=5-s0/main", "step": 5, "loss": 2.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (caption, _), = report_module.training_curve_figures(tmp_path)
    loss_axis = drawn[0].axes[0]  # each candidate of the first flex job, not "ft_unit" (its first candidate)
    assert [t.get_text() for t in loss_axis.get_legend().get_texts()] == [
        "dann", "flex: cand-all", "flex: cand-conv1", "flex: cand-conv3"]
    assert caption.endswith("first run of each method: dann-k=5-s0, flex-k=5-s0)")


def test_the_cost_figure_s_memory_bars_stay_on_their_methods_rows(monkeypatch):
    drawn = []
    monkeypatch.setattr(report_module, "_png", lambda fig: drawn.append(fig) or b"png")
    rows = [{"method": m, "seed": 0, "accuracy": 0.5, "wall_s": 1.0 + i,
             **({"peak_rss_mb": 1300} if m == "mcc" else {})} for i, m in enumerate(["source_only", "finetune", "dann",
                                                                                        "mcc"])]
    report_module.cost_figure(None, rows)
    wall, memory = drawn[0].axes
    assert memory.get_ylim() == wall.get_ylim()  # one row per method in both panels: mcc's bar on mcc's row
    bar = next(p for p in memory.patches if p.get_width() == 1300)
    assert abs(bar.get_y() + bar.get_height() / 2 - 2) < 1e-9  # mcc is the third of the sorted methods


def test_a_label_efficiency_curve_of_one_k_ticks_that_k_alone():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transferkit.plots import draw_accuracy_curves
    fig, ax = plt.subplots()
    draw_accuracy_curves(ax, {"a": [(2, 30.0, 1.0)]})
    assert list(ax.get_xticks()) == [2]
    plt.close(fig)


def test_training_curves_label_their_log_axis_in_plain_text_and_name_their_folder(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(report_module, "_png", lambda fig: drawn.append(fig) or b"png")
    (tmp_path / "mnist-digits" / "s0").mkdir(parents=True)
    (tmp_path / "mnist-digits" / "s0" / "metrics.jsonl").write_text(
        json.dumps({"method": "dann", "run": "a", "step": 30, "loss": 0.9, "val_accuracy": 0.5}) + "\n"
        + json.dumps({"method": "dann", "run": "a", "step": 60, "loss": 0.25, "val_accuracy": 0.6}) + "\n")
    (tmp_path / "one" ).mkdir()
    (tmp_path / "one" / "metrics.jsonl").write_text(json.dumps({"method": "m", "run": "a", "step": 5, "loss": 2.5}))
    figures = report_module.training_curve_figures(tmp_path)
    assert figures[0][0] == "Training curves (mnist-digits/s0, first run of each method: a)"
    for fig in drawn:  # a loss within one decade (0.25-0.9: no major tick in view), and one evaluation
        fig.canvas.draw()
        loss_axis, acc_axis = fig.axes
        low, high = loss_axis.get_ylim()
        labels = [t.get_text() for t in loss_axis.get_yticklabels(which="both")
                  if t.get_text() and low <= t.get_position()[1] <= high]  # labels in view
        assert labels and not any("$" in t or "mathdefault" in t for t in labels), labels  # was $\mathdefault{..}$
        assert all(line.get_marker() in "os" for line in loss_axis.lines + acc_axis.lines)  # one evaluation: a dot


def test_tables_and_reports_name_the_class_subsets_of_the_run(tmp_path, capsys):
    import json

    from transferkit.cli import main
    from transferkit.results import summarize
    from transferkit.tables import class_subsets, markdown_table
    both = {"source_classes": "0-4", "target_classes": [5, 7]}
    assert class_subsets(both) == "source classes 0-4; target classes 5, 7"
    assert class_subsets({"source_classes": None}) == "" == class_subsets(None)
    rows = [{"method": "m", "source": "mnist", "target": "mnist", "setting": "k=1", "accuracy": 0.5, "wall_s": 1.0,
             "seed": 0}]
    config = {"source_classes": None, "target_classes": "5-9"}
    assert markdown_table(summarize(rows), rows, config).startswith("Classes: target classes 5-9.\n\n| method |")
    assert markdown_table(summarize(rows), rows, {}).startswith("| method |")
    write_results(tmp_path, "x", config, rows)
    assert "Classes: target classes 5-9." in (tmp_path / "results.md").read_text()
    assert main(["summary", str(tmp_path)]) == 0 and "Classes: target classes 5-9." in capsys.readouterr().out
    write_report(tmp_path, tmp_path / "out")
    for name in ("report.md", "report.html"):
        assert "mean ± standard error over seeds (n); target classes 5-9." in (tmp_path / "out" / name).read_text()
    (tmp_path / "results.json").write_text(json.dumps({"name": "x", "config": "not a mapping", "rows": rows}))
    assert main(["summary", str(tmp_path)]) == 0 and "Classes" not in capsys.readouterr().out


def test_confusion_figure_keeps_its_x_label_inside_and_a_missing_directory_is_named(tmp_path):
    import io

    import numpy as np
    from matplotlib.image import imread

    from transferkit.errors import TransferkitError
    rows = [{"method": m, "source": "s", "target": "t", "setting": "k=2", "confusion": np.eye(4, dtype=int).tolist(),
             "class_names": [f"class{i}" for i in range(4)]} for m in ("linear_probe", "tap")]
    grey = imread(io.BytesIO(report_module.confusion_figures(rows)[0][1]))[:, :, :3].min(2)
    last_ink = int(np.flatnonzero((grey < 0.5).any(1)).max())
    assert grey.shape[0] - 1 - last_ink >= 3  # "predicted" was cut at the bottom edge
    with pytest.raises(TransferkitError, match="nowhere does not exist: give a run or benchmark directory"):
        report_module.write_report(tmp_path / "nowhere")


def test_the_units_flex_methods_picked_are_counted_under_the_tables(tmp_path, capsys):
    from transferkit.experiment import _log_row
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    base = {"source": "s", "target": "t", "setting": "k=1", "accuracy": 0.5, "wall_s": 1.0}
    rows = [{**base, "method": "flex", "seed": s, "picked": p} for s, p in enumerate(["conv2", "fc1", "fc1"])]
    rows += [{**base, "method": "faster_flex", "seed": 0, "picked": "conv1"}, {**base, "method": "ft_all", "seed": 0}]
    write_results(tmp_path, "x", {}, rows)
    results_md = (tmp_path / "results.md").read_text()
    assert "flex picked: fc1 ×2, conv2 ×1\nfaster_flex picked: conv1 ×1\n" in results_md
    assert [line for line in results_md.splitlines() if line.startswith("|")][-1].startswith("| ft_all |")
    main(["summary", str(tmp_path)])
    assert "flex picked: fc1 ×2, conv2 ×1" in capsys.readouterr().out
    html_path, md_path = write_report(tmp_path, tmp_path / "out")
    assert "faster_flex picked: conv1 ×1" in md_path.read_text() and "flex picked: fc1 ×2" in html_path.read_text()
    more = rows + [{**base, "method": "flex", "seed": 0, "setting": "k=5", "picked": "all"}]
    assert "flex (s → t, k=5) picked: all ×1" in markdown_table(summarize(more), more)
    logged = []
    _log_row(logged.append, False, rows[0])
    _log_row(logged.append, False, rows[-1])
    assert logged[0].endswith("(1.0s), picked conv2") and logged[1].endswith("(1.0s)")


def test_rows_that_read_no_target_label_and_partial_da_rows_are_named_under_the_tables(tmp_path, capsys):
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    base = {"source": "s", "target": "t", "setting": "k=5", "wall_s": 1.0, "class_names": ["5", "6"]}
    rows = [{**base, "method": "source_only", "seed": 0, "accuracy": 0.6, "n_labeled": 0,
             "accuracy_all_source_classes": 0.4, "n_source_classes": 10}]
    rows += [{**base, "method": "dann", "seed": s, "accuracy": 0.7, "n_labeled": 0,
              "accuracy_all_source_classes": a, "n_source_classes": 10} for s, a in enumerate([0.5, 0.6])]
    rows += [{**base, "method": "finetune", "seed": s, "accuracy": 0.8, "n_labeled": 10} for s in range(2)]
    write_results(tmp_path, "x", {}, rows)
    partial = ("source_only, dann predict with the source classifier among the target's 2 classes only (closed to "
               "them); the partial-DA protocol predicts among all 10 source classes, which gives accuracy (%, mean "
               "over seeds, accuracy_all_source_classes): source_only 40.0; dann 55.0.")
    unlabelled = ("dann reads no target label (n_labeled 0): the setting of its rows (k=5) names the labelled target "
                  "subset the other methods trained on.")
    assert f"{partial}\n{unlabelled}\n" in (tmp_path / "results.md").read_text()
    main(["summary", str(tmp_path)])
    assert unlabelled in capsys.readouterr().out
    html_path, md_path = write_report(tmp_path, tmp_path / "out")
    assert partial in md_path.read_text() and unlabelled in html_path.read_text()
    alone = [r for r in rows if r["method"] != "finetune"]  # no row reads target labels: nothing to tell apart
    assert "n_labeled 0" not in markdown_table(summarize(alone), alone)
    assert "partial-DA" not in markdown_table(summarize(rows[3:]), rows[3:])


def test_per_unit_figures_mark_the_units_each_method_picked(monkeypatch):
    figs = _capture(monkeypatch)
    rows = [{**REVIEW_ROW, "method": "flex", "seed": s, "picked": p, "acc": {"conv1": 0.1, "fc1": 0.5, "all": 0.4}}
            for s, p in enumerate(["fc1", "fc1", "all"])]
    rows.append({**REVIEW_ROW, "method": "tap", "seed": 0, "tap_unit": "fc1", "tap_classifier": "svm",
                 "acc": {"fc1": {"svm": 0.7, "softmax": 0.6}}})
    report_module.per_unit_figures(rows)
    ax = figs[-1].axes[0]
    marks = [(line.get_label(), list(map(str, line.get_xdata()))) for line in ax.lines if line.get_marker() == "v"]
    assert [m[1] for m in marks] == [["fc1"], ["all"], ["fc1"]]  # tap's on its svm line
    assert [m[0] for m in marks if not m[0].startswith("_")] == ["flex: picked", "tap: svm: picked"]
    assert sorted(t.get_text() for t in ax.texts) == ["1/3", "2/3"]  # tap's one seed picked it: no count


def test_report_out_must_be_a_directory_and_several_directories_skip_the_unfinished(bench_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["report", str(bench_dir / "k1"), "--out", str(tmp_path / "afile")]) == 2
    assert "--out " + str(tmp_path / "afile") + " is a file; --out is the directory" in capsys.readouterr().err
    assert main(["report", str(bench_dir / "k1"), "--out", str(tmp_path / "out1" / "paper.html")]) == 2
    assert f"give e.g. --out {tmp_path / 'out1' / 'paper'}" in capsys.readouterr().err
    assert not (tmp_path / "out1").exists()
    half = tmp_path / "half"  # an interrupted run: finished jobs, no results.json
    (half / "jobs").mkdir(parents=True)
    (half / "jobs" / "finetune-k=1-s0.json").write_text("{}")
    assert main(["report", str(bench_dir / "k1"), str(half), str(bench_dir / "k3"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert (tmp_path / "o" / "k1" / "report.html").exists() and (tmp_path / "o" / "k3" / "report.html").exists()
    assert f"skipped {half}: no results.json" in err and f"transferkit run --resume {half}" in err
    assert "1 of 3 directories have no report" in err
    assert main(["report", str(tmp_path / "gone")]) == 2
    assert "does not exist" in (err := capsys.readouterr().err) and "--out of `transferkit run`" not in err


def test_per_unit_figures_show_accuracies_in_percent_with_error_bars_and_skip_other_dicts(monkeypatch):
    figs = _capture(monkeypatch)
    rows = [{**REVIEW_ROW, "method": "flex", "seed": s, "candidate_val_accuracy": {"conv1": 0.2 + s / 10, "fc1": 0.5},
             "candidate_val_loss": {"conv1": 0.9, "fc1": 0.4}, "candidate_steps": {"conv1": 100, "fc1": 100}}
            for s in range(3)]
    caps = [cap for cap, _ in report_module.per_unit_figures(rows)]
    assert caps == ["candidate_val_accuracy per unit, s → t (k=1)"]  # not the steps, not the losses
    ax = figs[-1].axes[0]
    assert ax.get_ylabel() == "validation accuracy (%)" and ax.get_title().startswith("candidate_val_accuracy")
    assert list(ax.lines[0].get_ydata()) == pytest.approx([30.0, 50.0])
    (bars,) = ax.collections  # standard error over the 3 seeds: 10 / sqrt(3) points around conv1's mean
    low, high = bars.get_segments()[0][:, 1]
    assert high - low == pytest.approx(2 * 10 / 3 ** 0.5)


def test_report_shows_a_run_config_yaml_only_when_it_differs_from_the_stored_config(bench_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bench_dir / "k1", run)
    _, md = write_report(run, tmp_path / "a")
    text = md.read_text()
    assert "# config.yaml" not in text and text.count("methods:") == 1  # was printed twice, identical
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("repeats: 2", "repeats: 3"))
    _, md = write_report(run, tmp_path / "b")
    assert "# config.yaml (differs from the config above, which results.json stores" in md.read_text()
    _, md = write_report(bench_dir, tmp_path / "c")  # a benchmark's run configs are its own: still shown
    assert "# k1/config.yaml\n" in md.read_text()


def test_results_name_the_environments_of_rows_made_under_several():
    from transferkit.tables import environment_lines
    rows = [{**REVIEW_ROW, "method": "m", "seed": s, "threads": t, "kernels": "AVX2 (MKL_CBWR AVX2, oneDNN AVX2)"}
            for s, t in enumerate([1, 1, 2])]
    assert environment_lines(rows) == ["Rows made under 2 torch threads per process (1: m seed 0, m seed 1; 2: m "
                                       "seed 2): they may differ from one environment's rows (docs/scale.md)."]
    assert environment_lines(rows[:2]) == [] and environment_lines([REVIEW_ROW]) == []


def test_summary_of_several_runs_is_one_table_with_a_run_column(tmp_path, capsys):
    base = {"source": "s", "target": "t", "setting": "k=1", "wall_s": 1.0}
    first = [{**base, "method": "flex", "seed": s, "accuracy": a, "picked": "fc1"} for s, a in ((0, 0.5), (1, 0.7))]
    second = [{**base, "method": "flex", "seed": s, "accuracy": 0.9, "picked": "conv2"} for s in (0, 1)]
    second.append({**base, "method": "dann", "seed": 0, "accuracy": 0.25})
    write_results(tmp_path / "a", "a", {"target_classes": "5-9"}, first)
    write_results(tmp_path / "b", "b", {}, second, failed=[{"job": "mmd seed 0", "error": "ValueError: x"}])
    code = main(["summary", str(tmp_path / "a"), str(tmp_path / "b" / "results.json")])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert code == 2 and "b/mmd seed 0: ValueError" in err, err  # b's failed job, named by its run
    assert lines[0] == "Classes: run a: target classes 5-9."
    assert "| run | method | source |" in out
    assert "| a | flex | s | t | k=1 | 60.0 ± 10.0 | 2 |" in out  # seeds averaged within a run, not across
    assert "| b | flex | s | t | k=1 | 90.0 ± 0.0 | 2 |" in out and "| b | dann |" in out
    assert "flex (run a: s → t, k=1) picked: fc1 ×2" in out and "flex (run b: s → t, k=1) picked: conv2 ×2" in out
    assert main(["summary", str(tmp_path / "a")]) == 0 and "| run |" not in capsys.readouterr().out
    assert main(["summary", str(tmp_path / "a"), str(tmp_path / "a" / "results.json")]) == 2
    assert "given twice: its rows would count twice" in capsys.readouterr().err
    (tmp_path / "c" / "a").mkdir(parents=True)  # two directories named a: their paths name them
    write_results(tmp_path / "c" / "a", "a", {}, second[:1])
    assert main(["summary", str(tmp_path / "a"), str(tmp_path / "c" / "a")]) == 0
    assert f"| {tmp_path / 'c' / 'a'} | flex |" in capsys.readouterr().out


def test_summary_of_runs_names_them_by_their_folder_and_the_config_keys_they_differ_in(tmp_path, capsys):
    base = {"method": "linear_probe", "source": "mnist", "target": "digits", "setting": "k=5", "seed": 0,
            "accuracy": 0.79, "wall_s": 1.0}
    common = {"backbone": "lenet", "seed": 0, "name": "x", "workers": 1, "methods": ["linear_probe"],
              "train": {"steps": 30, "progress": None}}
    a, b = tmp_path / "cli1" / "20261202-101500-000001", tmp_path / "own" / "20261202-111500-000002"
    write_results(a, "a", {**common, "val_fraction": 0.15}, [base])  # a key at its default ...
    write_results(b, "b", {**common, "backbone": "mine", "workers": 2, "methods": ["linear_probe", "tap"],
                           "train": {"steps": 300, "progress": True}}, [{**base, "accuracy": 0.216}])
    assert main(["summary", str(a), str(b)]) == 0  # ... and one from before the key: alike
    out = capsys.readouterr().out
    assert "| cli1/20261202-101500-000001 | linear_probe |" in out and "| own/20261202-111500-000002 |" in out
    assert ("The runs' configs differ in backbone: lenet in cli1/20261202-101500-000001; mine in "
            "own/20261202-111500-000002 / train.steps: 30 in cli1/20261202-101500-000001; 300 in "
            "own/20261202-111500-000002 (config.yaml): the rows of one method are not of one config.") in out, out
    assert "workers" not in out and "progress" not in out and "methods:" not in out and "val_fraction" not in out
    write_results(tmp_path / "c", "c", common, [base])
    assert main(["summary", str(a), str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "| c | linear_probe |" in out and "configs differ" not in out  # one config: no line


def test_summary_writes_csv_and_latex_with_the_numbers_and_notes_of_the_markdown_table(tmp_path, capsys):
    import csv
    base = {"source": "s", "target": "t_1", "setting": "k=1", "wall_s": 1.25}
    rows = [{**base, "method": "ft_unit:conv1", "seed": s, "accuracy": a, "picked": "fc1"}
            for s, a in ((0, 0.5), (1, 0.7))]
    rows.append({**base, "method": "dann", "seed": 0, "accuracy": 0.25})
    write_results(tmp_path / "a", "a", {"target_classes": "5-9"}, rows)
    assert main(["summary", str(tmp_path / "a"), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    table = list(csv.DictReader(out.splitlines()))
    assert list(table[0]) == ["method", "source", "target", "setting", "accuracy_mean", "accuracy_se", "n", "seeds",
                              "wall_s"]
    first = table[0]
    assert first["method"] == "ft_unit:conv1" and float(first["accuracy_mean"]) == pytest.approx(0.6)
    assert float(first["accuracy_se"]) == pytest.approx(0.1) and first["seeds"] == "0 1" and first["n"] == "2"
    assert table[1]["accuracy_se"] == "" and float(table[1]["wall_s"]) == 1.25  # one seed: no standard error
    assert "note: Classes: target classes 5-9." in err and "note: Mean ± standard error over n seeds" in err
    assert "picked: fc1 ×2" in err
    assert main(["summary", str(tmp_path / "a"), "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    assert tex.startswith("\\begin{tabular}{llllrrr}\n\\toprule\n")
    assert "method & source & target & setting & target accuracy (\\%) & n & wall s \\\\" in tex
    assert "ft\\_unit:conv1 & s & t\\_1 & k=1 & 60.0 $\\pm$ 10.0 & 2 & 1.2 \\\\" in tex
    assert "\\bottomrule\n\\end{tabular}\n% Classes: target classes 5-9.\n" in tex
    assert "% Mean ± standard error over n seeds (label subsets)." in tex
    assert main(["summary", str(tmp_path / "a")]) == 0  # markdown, as before
    assert "| ft_unit:conv1 | s | t_1 | k=1 | 60.0 ± 10.0 | 2 | 1.2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["summary", str(tmp_path / "a"), "--format", "xlsx"])
    assert "invalid choice: 'xlsx'" in capsys.readouterr().err


def test_summary_of_an_unfinished_run_shows_its_finished_jobs_and_what_completes_it(tmp_path, capsys):
    run = tmp_path / "runs" / "mine" / "20261201-101500-000001"
    (run / "jobs").mkdir(parents=True)
    (run / "config.yaml").write_text("name: mine\ntarget_classes: 5-9\n")
    base = {"method": "finetune", "source": "s", "target": "t", "setting": "k=1", "wall_s": 1.0}
    for seed, acc in ((0, 0.5), (1, 0.7)):
        (run / "jobs" / f"finetune-k=1-s{seed}.json").write_text(json.dumps({**base, "seed": seed, "accuracy": acc}))
    (run / "jobs" / "broken.json").write_text("{")
    assert main(["summary", str(run)]) == 2
    out, err = capsys.readouterr()
    assert "Classes: target classes 5-9." in out and "| finetune | s | t | k=1 | 60.0 ± 10.0 | 2 |" in out, out
    assert "the table shows the finished jobs only: " in err and "holds 3 finished job(s)" in err, err  # broken too
    assert f"`transferkit run --resume {run}`" in err, err
    (run / "config.yaml").write_text("name: mine\ntarget_classes: 5-9\nk: [2, 3]\n")  # a resume left k=1 out
    (run / "jobs" / "finetune-k=2-s0.json").write_text(json.dumps({**base, "setting": "k=2", "seed": 0,
                                                                   "accuracy": 0.9}))
    assert main(["summary", str(run)]) == 2
    out, err = capsys.readouterr()
    assert "| finetune | s | t | k=2 | 90.0 | 1 |" in out and "k=1" not in out, out
    assert "the table shows the finished jobs only: " in err and "holds 1 finished job(s)" in err, err


def test_zero_shot_rows_get_an_honest_plus_minus_note_and_one_class_predictions_are_named():
    from transferkit.results import summarize
    from transferkit.tables import markdown_table, one_class_line
    base = {"source": "s", "target": "t", "setting": "k=5", "wall_s": 1.0, "n_labeled": 0,
            "class_names": ["7", "8", "9"]}
    spread = [[3, 1, 0], [1, 3, 0], [0, 1, 3]]
    one = [[4, 0, 0], [4, 0, 0], [4, 0, 0]]  # every image predicted as '7': 33.3 ± 0.0
    rows = [{**base, "method": "clip", "seed": s, "accuracy": 0.75, "confusion": spread} for s in range(2)]
    rows += [{**base, "method": "attribute_zsl", "seed": s, "accuracy": 1 / 3, "confusion": one} for s in range(2)]
    text = markdown_table(summarize(rows), rows)
    assert "label subsets" not in text  # a seed of a zero-shot row draws none
    assert ("Mean ± standard error over n seeds (no row reads a target label: a seed changes the initialisation and "
            "the training order, not a label subset; the setting k=5 names no labelled subset).") in text
    assert ("Every test image predicted as one class: attribute_zsl (seeds 0, 1: class 7); such an accuracy is that "
            "class's share of the test images.") in text
    mixed = rows + [{**base, "method": "finetune", "seed": s, "accuracy": 0.9, "n_labeled": 15} for s in range(2)]
    assert ("(label subsets; for rows that read no target label, n_labeled 0, a seed changes the initialisation and "
            "the training order).") in markdown_table(summarize(mixed), mixed)
    adapted = [{**base, "method": "dann", "seed": s, "accuracy": 0.6, "n_unlabeled": 1000, "setting": k}
               for s in range(2) for k in ("k=10", "k=2")]
    assert ("no row reads a target label: a seed changes the initialisation and the training order, not a label "
            "subset; under k=2, k=10 also which k images per class are drawn as labels, which their unlabelled "
            "images leave out).") in markdown_table(summarize(adapted), adapted)
    both = adapted + [{**r, "setting": "k=2"} for r in mixed[-2:]]
    assert ("for rows that read no target label, n_labeled 0, a seed changes the initialisation and the training "
            "order; under k=2, k=10 also which k images") in markdown_table(summarize(both), both)
    given = [{**r, "unlabeled": "folder:u"} for r in adapted]  # a config's own unlabelled images: no k left out
    assert "not a label subset; the setting k=2, k=10 names no labelled subset)." in markdown_table(summarize(given),
                                                                                                  given)
    single_class_test = {**rows[0], "confusion": [[0, 0, 0], [0, 4, 0], [0, 0, 0]]}  # one class of images: no line
    assert one_class_line([single_class_test]) == [] and one_class_line(rows[:2]) == []


def test_training_curves_of_few_points_are_named_with_how_to_log_more(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_png", lambda fig: b"png")
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"method": m, "run": m, "step": s, "loss": 1.0 / s}) + "\n"
                for m, steps in (("lext", (30,)), ("finetune", (10, 20, 30))) for s in steps))
    notes = []
    report_module.training_curve_figures(tmp_path, notes)
    assert len(notes) == 1 and "lext logged fewer than 3 points" in notes[0] and "lower eval_every" in notes[0]


TRIAL_NAMES = ["benign", "cyst", "normal", "malignant"]  # a hospital trial: few malignant test images


def _trial_row(method, seed, per_class, confusion, **more):
    return {"method": method, "seed": seed, "source": "s", "target": "t", "setting": "k=5", "wall_s": 1.0,
            "accuracy": 0.846, "class_names": TRIAL_NAMES, "per_class_accuracy": per_class, "confusion": confusion,
            **more}


def test_classes_a_method_never_recognised_on_any_seed_are_named_under_the_tables(tmp_path):
    from transferkit.tables import never_recognised_line
    missed = [[10, 0, 0, 0], [1, 9, 0, 0], [2, 0, 8, 0], [6, 0, 0, 0]]  # malignant: 0 of 6 on every seed
    found = [[10, 0, 0, 0], [1, 9, 0, 0], [2, 0, 8, 0], [5, 0, 0, 1]]
    one = [[10, 0, 0, 0], [10, 0, 0, 0], [10, 0, 0, 0], [6, 0, 0, 0]]  # every image predicted benign
    rows = [_trial_row(m, s, [1.0, 0.9, 0.8, 0.0], missed) for m in ("dann", "finetune") for s in range(3)]
    rows += [_trial_row("mcc", s, [1.0, 0.9, 0.8, 1 / 6 if s == 1 else 0.0], found if s == 1 else missed)
             for s in range(3)]  # recognised malignant on one seed: not named
    rows += [_trial_row("source_only", s, [1.0, 0.0, 0.0, 0.0], one) for s in range(2)]  # the one-class line's
    rows += [_trial_row("coral", s, [1.0, 0.0, 0.0, 0.0] if s else [1.0, 0.9, 0.8, 0.0], one if s else missed)
             for s in range(2)]  # one seed of one class, one not: 0 on both seeds is named
    line = ("Never recognised (per-class accuracy 0 on every seed): malignant (dann, k=5; finetune, k=5; coral, k=5) "
            "(per_class_accuracy in results.json).")
    assert never_recognised_line(rows) == [line]
    write_results(tmp_path, "trial", {}, rows)
    text = (tmp_path / "results.md").read_text()
    assert line in text and "Every test image predicted as one class: source_only (seeds 0, 1: class benign); " \
                            "coral (seed 1: class benign)" in text, text
    assert line in (write_report(tmp_path, tmp_path / "out")[0]).read_text()
    unscored = [_trial_row("dann", 0, [1.0, 0.9, None, 0.0], missed)]  # no test image of normal: not 0, unknown
    assert never_recognised_line(unscored) == ["Never recognised (per-class accuracy 0 on every seed): malignant "
                                               "(dann, k=5) (per_class_accuracy in results.json)."]
    assert never_recognised_line(rows[6:9]) == [] and never_recognised_line(rows[9:11]) == []


def test_a_never_recognised_line_stays_short_for_many_classes_and_names_runs_and_pairs():
    from transferkit.tables import never_recognised_line
    names = [f"c{i}" for i in range(12)]
    conf = [[5 if j == 0 else 0 for j in range(12)] for _ in range(12)]
    conf[1] = [0, 5] + [0] * 10  # two predicted classes: not one class
    row = {"method": "weak", "seed": 0, "source": "s", "target": "t", "setting": "k=1", "class_names": names,
           "confusion": conf, "per_class_accuracy": [1.0, 1.0] + [0.0] * 10}
    (line,) = never_recognised_line([row])
    assert line == ("Never recognised (per-class accuracy 0 on every seed): c2, c3, c4, c5, c6 and 5 more classes "
                    "(weak, k=1) (per_class_accuracy in results.json).")
    other = {**row, "target": "u", "run": "b", "class_names": names[:2] + ["x*y"] + names[3:]}
    (line,) = never_recognised_line([row, other])
    assert "(weak, s → t, k=1)" in line and "x\\*y (weak, run b, s → u, k=1)" in line, line
    assert "x*y (weak, run b, s → u, k=1)" in never_recognised_line([row, other], markdown=False)[0]


def test_target_classes_trained_on_without_test_images_are_named_under_the_tables(tmp_path):
    from transferkit.results import summarize
    from transferkit.tables import markdown_table, not_scored_line
    conf = [[10, 0, 0, 0], [1, 9, 0, 0], [2, 0, 8, 0], [0, 0, 0, 0]]
    rows = [_trial_row(m, s, [1.0, 0.9, 0.8, None], conf) for m in ("dann", "finetune") for s in range(2)]
    line = "Not scored (no test images): malignant; accuracy is over the other 3 classes."
    assert not_scored_line(rows) == [line]
    write_results(tmp_path, "trial", {}, rows)
    assert line in (tmp_path / "results.md").read_text()
    assert line in (write_report(tmp_path, tmp_path / "out")[1]).read_text()
    assert "Never recognised" not in (tmp_path / "results.md").read_text()  # null is not 0
    own = [{**r, "test": "npz:test.npz", "n_test": 30, "n_test_classes": 3, "n_target_classes": 4} for r in rows]
    text = markdown_table(summarize(own), own)
    assert ("Test images: npz:test.npz, 30 images of 3 of the 4 target classes (a test set of its own, not a split "
            "of the target).\nNot scored (no test images): malignant.\n") in text, text  # the count is said once
    runs = [{**rows[0], "run": "a"},
            {**rows[0], "run": "b", "target": "u", "per_class_accuracy": [1.0, None, 0.8, None]}]
    assert not_scored_line(runs) == ["Not scored (no test images; target t, run a): malignant; accuracy is over the "
                                     "other 3 classes.",
                                     "Not scored (no test images; target u, run b): cyst, malignant; accuracy is over "
                                     "the other 2 classes."]
    assert not_scored_line([_trial_row("dann", 0, [1.0, 0.9, 0.8, 0.5], conf)]) == []


def test_confusion_figures_write_counts_support_and_what_the_colours_hold(monkeypatch):
    import numpy as np
    figs = _capture(monkeypatch)
    conf = [[11, 1, 0, 0], [1, 9, 0, 0], [2, 0, 8, 0], [2, 0, 0, 0]]  # malignant: 2 test images
    rows = [_trial_row(m, s, None, conf) for m in ("dann", "finetune") for s in range(3)]
    ((caption, png),) = report_module.confusion_figures(rows)
    assert png.startswith(b"\x89PNG")
    assert caption == ("Confusion matrices, s → t (k=5); colour: row-normalised per true class (recall on the "
                       "diagonal); numbers: counts summed over 3 seeds; a true class's label gives its test images "
                       "per seed")
    fig = figs[-1]
    dann = fig.axes[0]
    assert [t.get_text() for t in dann.get_yticklabels()] == ["benign (12)", "cyst (10)", "normal (10)",
                                                              "malignant (2)"]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in dann.texts}
    assert cells[(0, 0)] == "33" and cells[(3, 0)] == "6" and cells[(3, 3)] == "0" and len(cells) == 16
    assert dann.get_title() == "dann (3 seeds)" and fig.axes[1].get_yticklabels()[0].get_text() == ""
    assert np.allclose(dann.images[0].get_array()[3], [1, 0, 0, 0])  # colour: row-normalised
    assert "share of the true class" in fig.axes[-1].get_ylabel()  # the colour bar
    assert "numbers: counts summed over 3 seeds" in fig._suptitle.get_text()
    other = [_trial_row("dann", 3, None, [[5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 5, 0], [0, 0, 0, 1]])]
    ((caption, _),) = report_module.confusion_figures(rows[:3] + other)  # another test split: sums, per panel
    assert "summed over 4 seeds" in caption and caption.endswith("test images, summed over the seeds")
    assert figs[-1].axes[0].get_yticklabels()[3].get_text() == "malignant (7)"
    big = [{**REVIEW_ROW, "method": "m", "seed": 0, "class_names": [str(i) for i in range(13)],
            "confusion": np.eye(13, dtype=int).tolist()}]
    ((caption, _),) = report_module.confusion_figures(big)  # more than 12 classes: colours alone
    assert "numbers" not in caption and len(figs[-1].axes[0].texts) == 0


def test_a_ratio_larger_than_the_classes_is_drawn_at_the_labels_its_rows_used(monkeypatch):
    drawn = []
    monkeypatch.setattr(report_module, "_png", lambda fig: drawn.append(fig) or b"png")
    names = [str(c) for c in range(10)]
    rows = [{"method": m, "source": "s", "target": "t", "setting": f"ratio={r}", "seed": seed, "accuracy": 0.5,
             "wall_s": 1.0, "n_labeled": n if m == "finetune" else 0, "class_names": names}
            for r, n in ((5, 50), (400, 3000)) for m in ("finetune", "dann") for seed in (0, 1)]
    (caption, _), = report_module.label_efficiency_figures(rows)
    assert "ratio=400 at 300: the labels per class its rows used" in caption
    ax = drawn[0].axes[0]
    assert ax.get_xlabel() == "labelled target images per class (as used)"
    assert {tuple(line.get_xdata()) for line in ax.lines if len(line.get_xdata()) == 2} == {(5.0, 300.0)}
    (caption, _), = report_module.label_efficiency_figures([{**r, "setting": r["setting"].replace("ratio", "k"),
                                                             "n_labeled": 50} for r in rows])
    assert caption == "Label efficiency, s → t"  # k is what was asked
    grouped = [{**r, "group_accuracy": 0.5, "n_labeled": 9000 if r["method"] == "finetune" else 0} for r in rows]
    (caption, _), = report_module.label_efficiency_figures(grouped)  # groups asked, images counted: as asked
    assert caption == "Label efficiency, s → t"


def test_label_efficiency_of_a_grouped_target_counts_groups_and_draws_the_grouped_accuracy(monkeypatch):
    from transferkit.plots import accuracy_vs_k_plot
    figs = _capture(monkeypatch)
    rows = [{**REVIEW_ROW, "method": m, "setting": f"k={k}", "seed": seed, "accuracy": 0.5, "group_accuracy": 0.25 * k,
             "n_test_groups": 30} for m in ("finetune", "dann") for k in (1, 3) for seed in (0, 1)]
    (caption, _), = report_module.label_efficiency_figures(rows)
    assert caption == "Label efficiency, s → t (k counts labelled groups (videos) per class; dashed: the per-group " \
                      "accuracy)"
    ax = figs[-1].axes[0]
    assert ax.get_xlabel() == "labelled target groups (videos) per class" and "dashed: per-group" in ax.get_title()
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in dashed] == [[25.0, 75.0]] * 2  # in %, per method
    solid = {line.get_color() for line in ax.lines if line.get_linestyle() == "-"}
    assert {line.get_color() for line in dashed} == solid
    ax = accuracy_vs_k_plot(rows, None).axes[0]
    assert ax.get_xlabel() == "labelled target groups (videos) per class (k)" and "dashed: per-group" in ax.get_title()
    assert [list(line.get_ydata()) for line in ax.lines if line.get_linestyle() == "--"] == [[0.25, 0.75]] * 2
    plain = [{k: v for k, v in r.items() if k not in ("group_accuracy", "n_test_groups")} for r in rows]
    report_module.label_efficiency_figures(plain)
    assert figs[-1].axes[0].get_xlabel() == "labelled target images per class"
    ax = accuracy_vs_k_plot(plain, None).axes[0]
    assert ax.get_xlabel() == "labelled target images per class (k)" and ax.get_title() == ""
    assert ax.lines and all(line.get_linestyle() != "--" for line in ax.lines)


def test_confusion_figures_beyond_the_cap_are_named(monkeypatch):
    monkeypatch.setattr(report_module, "_png", lambda fig, tight_box=False: b"png")
    rows = [{"method": "m", "source": "s", "target": "t", "setting": f"k={k}", "seed": 0, "class_names": ["a", "b"],
             "confusion": [[2, 0], [1, 1]]} for k in (1, 2, 5, 10, 20, 50)]
    notes = []
    assert len(report_module.confusion_figures(rows, notes)) == 4
    assert notes == ["2 more confusion figures not shown: s → t (k=20), s → t (k=50) (the report draws 4)"]


def test_a_confusion_figure_of_many_classes_keeps_its_size(monkeypatch):
    sizes = []
    monkeypatch.setattr(report_module, "_png", lambda fig, tight_box=False: sizes.append(tuple(fig.get_size_inches()))
                        or b"png")
    for n in (12, 300):
        rows = [{"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0,
                 "confusion": torch.eye(n, dtype=torch.long).tolist()}]
        report_module.confusion_figures(rows)
    assert sizes[0] == sizes[1]  # 300 classes drew a 67-inch figure (1,000 ran out of memory)


def test_a_benchmark_table_names_the_class_subsets_its_rows_record_and_what_k_counts_on_grouped_targets():
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    base = {"setting": "k=2", "seed": 0, "accuracy": 0.5, "wall_s": 1.0, "source_classes": "0-4",
            "target_classes": "5-9"}
    rows = [{**base, "method": "lext", "source": "syndigits", "target": "mnist"},
            {**base, "method": "lext", "source": "mnist", "target": "digits@grouped5", "group_accuracy": 0.6,
             "n_labeled": 50}]
    plan = {"benchmark": "fewshot", "quick": True, "plan": {}}
    text = markdown_table(summarize(rows), rows, plan)
    assert text.startswith("Classes: source classes 0-4; target classes 5-9.\n")
    assert ("On the grouped target digits@grouped5, k counts labelled groups (videos) per class, every image of a "
            "group labelled: n_labeled counts the images.") in text
    other = [rows[0], {**rows[1], "target_classes": "0-9"}]
    assert markdown_table(summarize(other), other).startswith(
        "Classes: syndigits → mnist: source classes 0-4; target classes 5-9; mnist → digits@grouped5: source classes "
        "0-4; target classes 0-9.\n")
    assert not markdown_table(summarize(rows), rows, {"source": "a", "target": "b"}).startswith("Classes")  # a run's
    assert "grouped target" not in markdown_table(summarize(rows[:1]), rows[:1])
    run = {"source": "syndigits", "target": "mnist", "source_classes": "0-4", "target_classes": "5-9"}
    both = [{**rows[0], "run": "r1"}, {**rows[0], "run": "b1"}]  # a run and a benchmark, side by side
    assert markdown_table(summarize(both), both, [("r1", run), ("b1", plan)]).startswith(
        "Classes: run r1: source classes 0-4; target classes 5-9; run b1: source classes 0-4; target classes 5-9.\n")


def test_a_report_of_a_benchmark_names_the_class_subsets_its_rows_record(tmp_path):
    from pathlib import Path

    from transferkit.report import write_report
    row = {"method": "finetune", "source": "syndigits", "target": "mnist", "setting": "k=5", "accuracy": 0.5,
           "wall_s": 1.0, "source_classes": "0-4", "target_classes": "5-9"}
    (tmp_path / "results.json").write_text(json.dumps({"config": {"benchmark": "fewshot", "quick": True, "plan": {}},
                                                       "rows": [{**row, "seed": s} for s in range(2)]}))
    html_path, md_path = write_report(tmp_path)
    for path in (html_path, md_path):  # as results.md and summary name them
        assert "target test accuracy, mean ± standard error over seeds (n); source classes 0-4; target classes " \
               "5-9." in Path(path).read_text()


def test_config_differ_lines_compare_whole_values_nested_plans_and_ignore_key_order():
    from transferkit.compare import config_differ_lines
    long_a, long_b = "npz:/data/very/long/path/to/the/images/a.npz", "npz:/data/very/long/path/to/the/images/b.npz"
    runs = [("a", {"backbone": "lenet", "pretrained": long_a, "options": {"flex": {"a": 1, "b": 2}}}),
            ("b", {"backbone": "lenet", "pretrained": long_b, "options": {"flex": {"b": 2, "a": 1}}})]
    (line,) = config_differ_lines(runs)
    assert line.startswith("The runs' configs differ in pretrained: ") and " in a; " in line and "options" not in line
    same = [("a", {"backbone": "lenet", "methods": ["linear_probe"], "options": {}}),  # spelled out at its default,
            ("b", {"backbone": "lenet", "methods": ["linear_probe"],  # or of a method the run has not: no
                   "options": {"linear_probe": {"reset_head": True}, "dann": {"weight": 1.0}}})]  # difference
    assert config_differ_lines(same) == []  # (a trial)
    other = [same[0], ("c", {**same[0][1], "options": {"linear_probe": {"reset_head": False}}})]
    assert "options.linear_probe: " in config_differ_lines(other)[0]
    fewer = [same[0], ("d", {**same[0][1], "methods": ["linear_probe", "finetune"]})]
    assert config_differ_lines(fewer) == []  # another method list, not other options (a user's report)
    other_dann = [("e", {"backbone": "lenet", "methods": ["dann", "finetune"], "options": {"dann": {"weight": 0.3}}}),
                  ("f", {"backbone": "lenet", "methods": ["dann"], "options": {}})]
    (line,) = config_differ_lines(other_dann)
    assert line.startswith("The runs' configs differ in options.dann: ") and "finetune" not in line
    plans = [("x", {"benchmark": "flex", "quick": True, "plan": {"train": {"lr": 0.01}, "val_per_class": 5,
                                                                   "workers": 1}}),
             ("y", {"benchmark": "flex", "quick": True, "plan": {"train": {"lr": 0.1}, "val_per_class": 5,
                                                                   "workers": 4}})]
    assert config_differ_lines(plans) == ["The runs' configs differ in plan.train.lr: 0.01 in x; 0.1 in y "
                                          "(results.json's config): the rows of one method are not of one "
                                          "config."]  # benchmarks have no config.yaml


def test_the_class_subset_line_of_a_benchmark_table_is_tied_to_its_pair_unless_every_row_shares_it():
    from transferkit.tables import row_class_subsets
    base = {"method": "m", "setting": "k=1", "seed": 0, "accuracy": 0.5}
    rows = [{**base, "source": "a", "target": "b", "source_classes": "0-4", "target_classes": "0-4"},
            {**base, "source": "c", "target": "d"}]  # every class
    assert row_class_subsets(rows) == "a → b: source classes 0-4; target classes 0-4"
    assert row_class_subsets(rows[:1]) == "source classes 0-4; target classes 0-4"
    assert row_class_subsets(rows[1:]) == ""


def test_training_lines_name_sampler_and_class_weight_rows_with_their_runs():
    from transferkit.tables import training_line
    base = {"setting": "k=1", "seed": 0, "accuracy": 0.5}
    rows = [{**base, "method": "finetune", "run": "a", "sampler": "balanced"},
            {**base, "method": "finetune", "run": "b"},
            {**base, "method": "target_only", "run": "b", "class_weight": "balanced"}]
    assert training_line(rows, markdown=False) == [
        "Trained with sampler balanced (each class equally often in the labelled training batches): finetune (run a).",
        "Trained with class_weight balanced (each class's cross-entropy weighed by n / (classes x its images)): "
        "target_only (run b)."]


def test_combined_runs_name_the_versions_they_were_made_with_and_latex_escapes_bars():
    from transferkit.compare import environment_differ_lines
    from transferkit.tables import latex_text
    envs = [("a", {"transferkit": "0.1.0", "torch": "2.13.0+cpu", "packages": {"pillow": "13.0.0"}}),
            ("b", {"transferkit": "0.0.7", "torch": "2.13.0+cpu", "packages": {"pillow": "12.3.0"}}), ("c", None)]
    assert environment_differ_lines(envs) == [
        "The runs were made with other versions: transferkit 0.1.0 in a; 0.0.7 in b / Pillow 13.0.0 in a; 12.3.0 in b; "
        "their rows may differ for that alone (docs/scale.md)."]
    assert environment_differ_lines(envs[:1]) == []
    fingerprint = {"matmul": "9c48753c25", "conv2d": "7974b29752"}
    envs = [("a", {"kernel_fingerprint": fingerprint}), ("b", {"kernel_fingerprint": {**fingerprint, "matmul": "52"}}),
            ("c", {"torch": "2.13.0+cpu"})]  # c: written before fingerprints, left out
    assert environment_differ_lines(envs) == [
        "The runs' CPU kernels compute matmul differently (kernel_fingerprint: a, b): rows that pass through them may "
        "differ for that alone (docs/scale.md)."]
    assert environment_differ_lines([envs[0], ("d", {"kernel_fingerprint": fingerprint})]) == []
    assert latex_text("folder:d|a<b>") == r"folder:d\textbar{}a\textless{}b\textgreater{}"


def test_the_report_has_every_line_results_md_writes_under_the_table(tmp_path):
    """The report built its notes apart and left out what ± means for rows that read no target
    label (domain adaptation) and the environment lines (a trial)."""
    from transferkit.results import write_results
    rows = [{"method": "dann", "source": "mnist", "target": "mnistm", "setting": "k=5", "seed": s, "accuracy": a,
             "wall_s": 1.0, "n_labeled": 0, "n_unlabeled": 100, "environment": {"torch": v}}
            for s, a, v in ((0, 0.5, "2.13.0"), (1, 0.6, "2.11.0"))]
    write_results(tmp_path, "x", {}, rows)
    results_md = (tmp_path / "results.md").read_text()
    notes = [line for line in results_md.split("\n\n", 1)[1].splitlines() if line and not line.startswith("|")]
    assert any("no row reads a target label" in n for n in notes), notes
    write_report(tmp_path, tmp_path / "out")
    report_md, page = (tmp_path / "out" / "report.md").read_text(), (tmp_path / "out" / "report.html").read_text()
    for line in notes:
        assert line in report_md, line
    assert "no row reads a target label" in page


def test_the_report_of_a_stopped_run_draws_its_finished_jobs_as_summary_shows_them(tmp_path, capsys):
    """report refused a killed run that summary showed (a trial)."""
    run = tmp_path / "stopped"
    (run / "jobs").mkdir(parents=True)
    (run / "config.yaml").write_text("name: stopped\nk: 2\nratio: null\n")
    row = {"method": "finetune", "source": "mnist", "target": "digits", "setting": "k=2", "seed": 0, "accuracy": 0.5,
           "wall_s": 1.0}
    (run / "jobs" / "finetune-k=2-s0.json").write_text(json.dumps(row))
    assert main(["report", str(run)]) == 2  # as summary: the table holds the finished jobs only
    err = capsys.readouterr().err
    assert "the report shows the finished jobs only: " in err and "holds 1 finished job(s)" in err and "--resume" in err
    md = (run / "report.md").read_text()
    assert "| finetune | mnist | digits | k=2 | 50.0 | 1 |" in md and "The run is not finished" in md
    assert "results from <code>" + str(run / "jobs") in (run / "report.html").read_text()


def test_a_stopped_runs_rows_come_in_the_runs_job_order(tmp_path):
    """A stopped run's table was in job-file (alphabetical) order: source_only k=5 among the k=1 rows (a trial)."""
    from transferkit.results import unfinished_run
    run = tmp_path / "run"
    (run / "jobs").mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\nk: [1, 5, 10]\nmethods: [source_only, target_only, finetune]\n")
    base = {"source": "s", "target": "t", "accuracy": 0.5, "wall_s": 1.0}
    jobs = [("source_only", "k=5", 0), ("finetune", "k=1", 0), ("target_only", "k=1", 10), ("target_only", "k=1", 2),
            ("finetune", "k=10", 0), ("source_only", "k=1", 0)]
    for method, setting, seed in jobs:
        (run / "jobs" / f"{method}-{setting}-s{seed}.json").write_text(
            json.dumps({**base, "method": method, "setting": setting, "seed": seed}))
    order = [(r["method"], r["setting"], r["seed"]) for r in unfinished_run(run)["rows"]]
    assert order == [("source_only", "k=1", 0), ("finetune", "k=1", 0), ("target_only", "k=1", 2),
                     ("target_only", "k=1", 10), ("source_only", "k=5", 0), ("finetune", "k=10", 0)]
    (run / "config.yaml").write_text("name: x\nk: [10, 5, 1]\nmethods: [source_only, target_only, finetune]\n")
    assert [r["setting"] for r in unfinished_run(run)["rows"]] == ["k=10", "k=5"] + ["k=1"] * 4  # the list's order
