"""Session 81, the last review's findings (h_rm3) mended: an iterator of shots, a named folder beside
timestamped runs, an entry read without rows."""


def test_episodes_of_shots_given_as_an_iterator_score_them(tmp_path):
    # before: the shots were listed for the check alone; the fit check and the loop then read a spent iterator
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import run_experiment
    from transferkit.fewshot_eval import run_episodes
    cfg = ExperimentConfig(name="fs", source="digits", target="digits", source_classes="0-4", target_classes="5-9",
                           methods=["linear_probe"], k=2, repeats=1, select_on="none", out_dir=str(tmp_path),
                           pretrain=TrainConfig(steps=2, eval_every=2), train=TrainConfig(steps=2, eval_every=2))
    run_experiment(cfg, run_dir=tmp_path / "fs", log=None)
    rows, _ = run_episodes(tmp_path / "fs", None, ["prototype"], 5, iter([1, 2]), 5, 3, 0, lambda *a: None)
    assert len(rows) == 2 and len({r["setting"] for r in rows}) == 2  # one row per K


def test_a_folder_named_otherwise_is_not_taken_for_the_newest_run(tmp_path):
    # before: sorted by the last path part, 'bench-flex' came after every timestamp and was given as the example
    from transferkit.results import unfinished_hint
    (tmp_path / "demo" / "20270101-000000-000001").mkdir(parents=True)
    (tmp_path / "demo" / "20270101-000000-000001" / "config.yaml").write_text("k: 1\n")
    (tmp_path / "bench-flex").mkdir()
    (tmp_path / "bench-flex" / "plan.json").write_text("{}")
    hint = unfinished_hint(tmp_path)
    assert hint.endswith(f"(bench-flex, demo/20270101-000000-000001): give one, e.g. "
                         f"{tmp_path / 'demo' / '20270101-000000-000001'}"), hint


def test_an_entry_with_its_span_but_no_count_reads_its_span_without_rows():
    # before: rows=() (latex_table's default) counted as rows given, and the entry's own span was ignored
    from transferkit.tables import setting_text
    entry = {"method": "finetune", "source": "s", "target": "t", "setting": "all", "labels_per_class": [4, 4]}
    assert setting_text(entry, ()) == setting_text(entry) == "all (4 per class)"


def test_a_section_that_is_no_mapping_is_named_with_a_space():
    # before: f"{what}{where}" would print "configtrain. must be a mapping"
    import pytest

    from transferkit.engine import TrainConfig
    from transferkit.errors import TransferkitError
    from transferkit.fields import from_dict
    with pytest.raises(TransferkitError, match=r"^config train must be a mapping, got list$"):
        from_dict(TrainConfig, [], "train.")
