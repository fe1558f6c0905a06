"""The review's findings on the session's change, mended: each test fails on the code before its mend."""

import warnings

import numpy as np
import pytest

from transferkit import rundata
from transferkit.config import ExperimentConfig
from transferkit.errors import TransferkitWarning, is_quiet, quiet
from transferkit.rundata import prepare_domains

# ---- 1: the pixel-copy warning of the target's own test split ------------------------------------

def _copies(tmp_path) -> ExperimentConfig:
    """A source and a target (every image saved twice) of npz files: copies on both sides of the split."""
    rng = np.random.default_rng(0)
    x, y = rng.random((30, 8, 8)).astype("float32"), np.repeat(np.arange(3), 10)
    np.savez(tmp_path / "twice.npz", x=np.concatenate([x, x]), y=np.concatenate([y, y]))
    np.savez(tmp_path / "src.npz", x=x, y=y)
    return ExperimentConfig(source=f"npz:{tmp_path / 'src.npz'}", target=f"npz:{tmp_path / 'twice.npz'}", k=1)


def _fingerprinted(monkeypatch) -> list:
    """The sizes of the image sets fingerprinted (each fingerprinting asks chunk_rows once)."""
    sizes, chunk_rows = [], rundata.chunk_rows
    monkeypatch.setattr(rundata, "chunk_rows", lambda images: sizes.append(len(images)) or chunk_rows(images))
    return sizes


def test_the_test_split_is_fingerprinted_once_for_the_four_pools(tmp_path, monkeypatch):
    cfg = _copies(tmp_path)
    sizes = _fingerprinted(monkeypatch)
    with pytest.warns(TransferkitWarning, match=r"of its 15 test images, 10 are target train images, 3 are target "
                                                r"val images, 10 are source train images, 1 is a source val image"):
        data = prepare_domains(cfg)
    assert sizes.count(len(data.target.test)) == 1 and len(sizes) == 5  # the test split, then four pools


def test_no_pixel_search_where_its_warning_is_not_shown_or_both_domains_are_shipped(tmp_path, monkeypatch):
    cfg = _copies(tmp_path)
    sizes = _fingerprinted(monkeypatch)
    with quiet():  # a worker's process_domains: the starting process showed the warning
        assert is_quiet()
        prepare_domains(cfg)
    assert sizes == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not is_quiet()
        prepare_domains(ExperimentConfig(source="digits", target="digits+noise@grouped5", k=1))
    assert sizes == []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="something else")  # may not take it: the search runs
        assert not is_quiet()


# ---- 2: the setting column reads the summary entry, not every row --------------------------------------

class _Unread(list):
    def __iter__(self):
        raise AssertionError("the rows were scanned")


def test_setting_text_reads_what_summarize_records_in_the_entry():
    from transferkit.results import summarize
    from transferkit.tables import setting_text
    row = {"source": "s", "target": "t", "setting": "all", "accuracy": 0.5, "n_labeled": 12}
    rows = [{**row, "method": "a", "seed": 0, "labels_per_class": [3, 5]},
            {**row, "method": "a", "seed": 1, "labels_per_class": [4, 4]},
            {**row, "method": "older", "seed": 0}, {**row, "method": "da", "seed": 0, "n_labeled": 0}]
    summary = summarize(rows)
    assert [s["labels_per_class"] for s in summary] == [[3, 5], None, None]
    assert [s["labels_in_all"] for s in summary] == [12, 12, None]
    assert [setting_text(s, _Unread(rows)) for s in summary] == ["all (3-5 per class)", "all (12 labels in all)",
                                                                    "all"]
    older = [{k: v for k, v in s.items() if k not in ("labels_per_class", "labels_in_all")} for s in summary]
    assert [setting_text(s, rows) for s in older] == ["all (3-5 per class)", "all (12 labels in all)", "all"]
    assert [setting_text(s) for s in older] == ["all"] * 3  # an older results.json's entry without its rows


# ---- 4: a linked folder is warned of once per benchmark, not once per run it holds -----------------------

def test_a_benchmark_of_two_runs_warns_of_a_link_once_and_two_runs_twice(tmp_path, monkeypatch):
    from helpers import linked_img_folder

    from transferkit import bench, experiment
    from transferkit.io import remove_inside

    top, elsewhere, _ = linked_img_folder(tmp_path, "run")

    def a_run(cfg, run_dir, log):  # a run removing an old figure through the link
        remove_inside(top / "img" / "a.png", top)
        return top, []
    monkeypatch.setattr(experiment, "_run_experiment", a_run)
    monkeypatch.setattr(bench, "_run_benchmark", lambda *a: [experiment.run_experiment(ExperimentConfig(), log=None)
                                                             for _ in range(2)])
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        bench.run_benchmark("uda", log=None)
    assert sum("is left in place" in str(w.message) for w in said) == 1
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        for _ in range(2):  # two runs of a Python caller: each is told
            experiment.run_experiment(ExperimentConfig(), log=None)
    assert sum("is left in place" in str(w.message) for w in said) == 2
    assert (elsewhere / "a.png").exists()


# ---- 5: the first five named, then counted or elided, by errors.first_named -------------------------------

def test_messages_that_name_five_elide_or_count_the_rest_alike(tmp_path):
    from transferkit import rundir
    from transferkit.errors import TransferkitError
    from transferkit.jobs import JobFailure, failures_message
    finished = {("finetune", s): {"source_digest": "old"} for s in range(7)}
    with pytest.raises(TransferkitError, match=r"seed 3, finetune seed 4, \.\.\.\) started from another source"):
        rundir.check_same_source(tmp_path, finished, "new")
    message = failures_message([JobFailure(f"E{i}", "tb", f"j{i}") for i in range(7)], 9, "kept", "again")
    assert "j3 (E3); j4 (E4) and 2 more job(s); tracebacks" in message


# ---- 7: episodes record their device; a plan on another device keeps the earlier file ---------------------

def test_episodes_of_another_device_keep_the_earlier_file_and_rows_say_their_device(tmp_path, capsys, monkeypatch):
    import json

    import transferkit.fewshot_eval as fewshot_eval
    from transferkit.cli import main
    row = {"method": "finetune/prototype", "source": "s", "target": "t", "setting": "5-way 1-shot (k=2)", "seed": 0,
           "accuracy": 0.5, "wall_s": 1.0, "episodes": 600, "classes": 5}
    answer = {}
    monkeypatch.setattr(fewshot_eval, "run_episodes", lambda *a: ([answer["row"]], {"config": {}}))

    def episodes() -> str:
        assert main(["episodes", str(tmp_path), "--k-shot", "1"]) in (0, None)
        return capsys.readouterr().out
    answer["row"] = row  # an older run_episodes' row: no device, the CPU
    episodes()
    plan = json.loads((tmp_path / "episodes.json").read_text())["config"]["episodes"]
    assert plan["device"] == "cpu"
    plan.pop("device")  # as an older episodes.json keeps it
    older = json.loads((tmp_path / "episodes.json").read_text())
    older["config"]["episodes"] = plan
    (tmp_path / "episodes.json").write_text(json.dumps(older))
    answer["row"] = {**row, "device": "cpu"}
    assert "kept as" not in episodes()  # the same plan: replaced
    answer["row"] = {**row, "device": "cuda"}
    assert "kept as episodes-1.json" in episodes()
    assert json.loads((tmp_path / "episodes.json").read_text())["config"]["episodes"]["device"] == "cuda"


def test_an_episode_row_records_the_device_its_heads_ran_on(tmp_path):
    from transferkit.engine import TrainConfig
    from transferkit.experiment import run_experiment
    from transferkit.fewshot_eval import run_episodes
    cfg = ExperimentConfig(name="fs", source="digits", target="digits", source_classes="0-4", target_classes="5-9",
                           methods=["finetune"], k=2, repeats=1, select_on="none", out_dir=str(tmp_path),
                           pretrain=TrainConfig(steps=2, eval_every=2), train=TrainConfig(steps=2, eval_every=2))
    run_dir, _ = run_experiment(cfg, log=None)
    rows, _ = run_episodes(run_dir, None, ["prototype"], 5, [1], 5, 3, 0, lambda *a: None, device="cpu")
    assert [r["device"] for r in rows] == ["cpu"]


# ---- 8: an older figure named tsne*.png is captioned neutrally --------------------------------------------

def test_an_older_bench_fewshot_tsne_is_not_said_to_be_before_and_after_adaptation():
    from transferkit.report import saved_figure_caption
    assert saved_figure_caption("img/tsne.png", b"not a png") == "t-SNE of source and target embeddings (img/tsne.png)"


# ---- 9: --device over stage devices: one warning, whole sections too --------------------------------------

def test_device_over_stage_devices_and_whole_sections_warns_once():
    from transferkit import cli
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = cli._stage_devices(["train.device=cpu", "pretrain={device: cpu, steps: 3}", "train={steps: 2}",
                                  "pretrain={device: cuda}"], "cuda", ExperimentConfig)
    assert out == ["train.device=cuda", "pretrain={device: cpu, steps: 3}", "pretrain.device=cuda", "train={steps: 2}",
                   "pretrain={device: cuda}", "pretrain.device=cuda"]
    assert [str(w.message) for w in caught] == [
        "--device cuda wins over --set train.device=cpu, --set pretrain={device: cpu, steps: 3}"]
