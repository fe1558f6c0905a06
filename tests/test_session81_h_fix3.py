"""The second review's findings on the session's change, mended: each test fails on the code before its mend."""

import pytest

# ---- 1: the setting column's count has its own key, which summarize's extra_keys cannot overwrite ----------


def test_extra_keys_n_labeled_does_not_change_the_setting_text():
    from transferkit.results import summarize
    from transferkit.tables import setting_text
    row = {"source": "s", "target": "t", "setting": "all", "accuracy": 0.5}
    rows = [{**row, "method": m, "seed": seed, "n_labeled": n}
            for m, seed, n in [("dann", 0, 0), ("older", 0, 10), ("older", 1, 15), ("same", 0, 12), ("same", 1, 12)]]
    summary = summarize(rows, extra_keys=("n_labeled",))
    assert [s["n_labeled"] for s in summary] == [0.0, 12.5, 12.0]  # the mean extra_keys asked for
    assert [s["labels_in_all"] for s in summary] == [None, None, 12]
    assert [setting_text(s) for s in summary] == ["all", "all", "all (12 labels in all)"]
    written_before = [{k: v for k, v in s.items() if k != "labels_in_all"} for s in summary]  # n_labeled: a count
    assert [setting_text(s, rows) for s in written_before] == ["all", "all", "all (12 labels in all)"]


# ---- 2, 3: the runs of a folder, listed by one helper: the newest last, and the example the newest ------------

def test_the_out_folder_listing_gives_the_newest_run_by_its_timestamp(tmp_path):
    from transferkit.results import unfinished_hint
    stamps = {"alpha": "20270101-000000-000001", "demo": "20261201-000000-000001", "zeta": "20261101-000000-000001"}
    for name, stamp in stamps.items():
        (tmp_path / name / stamp).mkdir(parents=True)
        (tmp_path / name / stamp / "config.yaml").write_text("k: 1\n")
    for i in range(4):  # older runs of demo
        (tmp_path / "demo" / f"2026010{i}-000000-000001").mkdir()
        (tmp_path / "demo" / f"2026010{i}-000000-000001" / "config.yaml").write_text("k: 1\n")
    hint = unfinished_hint(tmp_path)
    assert hint.endswith(f"demo/20260103-000000-000001, zeta/20261101-000000-000001, demo/20261201-000000-000001, "
                         f"alpha/20270101-000000-000001 and 2 more): give one, e.g. "
                         f"{tmp_path / 'alpha' / '20270101-000000-000001'}"), hint


def test_one_helper_lists_the_runs_of_a_folder_for_summary_and_episodes(tmp_path):
    from transferkit.results import runs_inside
    (tmp_path / "bench" / "pair" / "s0" / "jobs").mkdir(parents=True)
    (tmp_path / "bench" / "pair" / "s0" / "config.yaml").write_text("k: 1\n")
    (tmp_path / "bench" / "plan.json").write_text("{}")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "config.yaml").write_text("b: 1\n")  # no jobs/ beside it
    assert runs_inside(tmp_path) == ["bench", "docs"]  # the benchmark, not the run inside it
    assert runs_inside(tmp_path, depth=3, with_jobs=True) == ["bench/pair/s0"]


# ---- 4: a test set of its own and the unlabelled pool are fingerprinted once each ------------------------------

def test_a_test_set_of_its_own_and_the_unlabelled_pool_are_fingerprinted_once(tmp_path, monkeypatch):
    import numpy as np

    from transferkit import rundata
    from transferkit.config import ExperimentConfig
    from transferkit.errors import TransferkitWarning
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 8, 8)).astype("float32"), np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "src.npz", x=x, y=y)
    np.savez(tmp_path / "tgt.npz", x=x[::-1].copy(), y=y[::-1].copy())
    np.savez(tmp_path / "test.npz", x=np.concatenate([x[:10], x[:3]]), y=np.concatenate([y[:10], y[:3]]))  # 13
    np.savez(tmp_path / "unl.npz", x=np.concatenate([x[:10], x[10:17]]), y=np.zeros(17, dtype=int))  # 17
    cfg = ExperimentConfig(source=f"npz:{tmp_path / 'src.npz'}", target=f"npz:{tmp_path / 'tgt.npz'}", k=1,
                           test=f"npz:{tmp_path / 'test.npz'}", unlabeled=f"npz:{tmp_path / 'unl.npz'}")
    sizes, chunk_rows = [], rundata.chunk_rows
    monkeypatch.setattr(rundata, "chunk_rows", lambda images: sizes.append(len(images)) or chunk_rows(images))
    with pytest.warns(TransferkitWarning, match=r"test .*images are target train images"):
        data = rundata.prepare_domains(cfg)
    assert len(data.target.test) == 13 and len(data.unlabeled) == 17
    assert sorted(sizes) == sorted([13, 32, 8, 24, 8] + [17, 8, 13]), sizes  # test + four pools; unlabelled, val, test
    assert (data.test_overlap, data.test_in_source, data.unlabeled_overlap) == \
        ({"train": 10, "val": 3}, {"train": 8, "val": 3}, {"val": 3, "test": 13}), \
        (data.test_overlap, data.test_in_source, data.unlabeled_overlap)  # as before, when each was fingerprinted


# ---- 6: a run resumed with another config is told of `run --resume` unless a benchmark holds it ---------------

@pytest.mark.parametrize("below, hinted", [("bench/run", False), ("bench/pair/s0", False),
                                           ("bench/a/b/c", True), ("bench/a/b/c/d", True)])
def test_the_resume_hint_is_left_out_only_for_a_benchmark_s_run(tmp_path, below, hinted):
    from transferkit.config import ExperimentConfig
    from transferkit.errors import TransferkitError
    from transferkit.rundir import check_same_config
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "plan.json").write_text("{}")  # a benchmark's, or any folder's plan.json above the run
    run = tmp_path / below
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(TransferkitError, match="holds a run with another config") as e:
        check_same_config(run / "config.yaml", ExperimentConfig(seed=1))
    assert ("`transferkit run --resume" in str(e.value)) == hinted


# ---- 7: links_warned_once is a scope of its own thread ------------------------------------------------------------

def test_a_run_in_a_second_thread_warns_of_a_link_the_first_thread_s_benchmark_warned_of(tmp_path, monkeypatch):
    import threading

    from helpers import linked_img_folder

    from transferkit import io

    top, elsewhere, _ = linked_img_folder(tmp_path, "run")
    said = []
    monkeypatch.setattr(io, "warn", lambda message, *a, **k: said.append(threading.current_thread().name))

    def a_run():  # a top-level run of its own, while the benchmark of the main thread is open
        with io.links_warned_once():
            io.remove_inside(top / "img" / "a.png", top)
    with io.links_warned_once():  # the main thread's benchmark
        io.remove_inside(top / "img" / "a.png", top)
        second = threading.Thread(target=a_run, name="second")
        second.start()
        second.join()
        io.remove_inside(top / "img" / "a.png", top)  # its own run's link, warned of already
    assert said == ["MainThread", "second"]


# ---- 8: summary --format csv gives the labels the markdown table's setting column names ----------------------------

def test_the_csv_table_has_the_labels_of_setting_all_beside_a_plain_setting():
    import csv
    import io

    from transferkit.results import summarize
    from transferkit.tables import csv_table
    row = {"source": "s", "target": "t", "setting": "all", "accuracy": 0.5}
    rows = [{**row, "method": "ft", "seed": 0, "n_labeled": 12, "labels_per_class": [3, 5]},
            {**row, "method": "older", "seed": 0, "n_labeled": 12},
            {**row, "method": "dann", "seed": 0, "n_labeled": 0},
            {**row, "method": "ft", "seed": 0, "setting": "k=2", "n_labeled": 6, "labels_per_class": [2, 2]}]
    table = list(csv.DictReader(io.StringIO(csv_table(summarize(rows)))))
    assert [(r["setting"], r["labels_per_class"], r["labels_in_all"]) for r in table] == \
        [("all", "3 5", "12"), ("all", "", "12"), ("all", "", ""), ("k=2", "", "")]
    assert "labels_per_class" not in csv_table(summarize(rows[3:]))  # no entry of setting all: no column
