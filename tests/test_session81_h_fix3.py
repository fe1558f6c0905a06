"""The second review's findings on the session's change, mended: each test fails on the code before its mend."""

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
