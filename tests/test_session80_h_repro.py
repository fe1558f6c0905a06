"""Reproducing the docs' benchmark tables (session 80, h_repro): what a benchmark's own tables
say about how they differ from the docs' ones (the zeroshot text encoder, uda's epoch count),
what ``--print-plan`` shows of the plan behind a table (uda's per-pair settings), and the git
revision of the code in results.json's environment."""

from transferkit.bench.zeroshot import zeroshot_plan, zeroshot_tables


def _zsl_rows(text_encoder):
    base = {"method": "clip_infonce", "source": "mnist[0-6]", "seed": 0, "text_encoder": text_encoder}
    return [{**base, "setting": "zsl", "accuracy": 0.3},
            {**base, "setting": "gzsl", "accuracy": 0.1, "seen": 0.9, "unseen": 0.05},
            {**base, "setting": "gzsl_prior", "accuracy": 0.2, "seen": 0.7, "unseen": 0.1},
            {**base, "method": "attr_zones", "text_encoder": None, "setting": "zsl", "accuracy": 0.4}]


def test_zeroshot_tables_name_the_hashing_text_encoder_that_stood_in_for_minilm():
    text = zeroshot_tables(_zsl_rows("hashing"), zeroshot_plan(True))
    (note,) = [line for line in text.splitlines() if line.startswith("Text encoder:")]
    assert "hashing" in note and "all-MiniLM-L6-v2" in note and "not comparable" in note
    assert text.index(note) < text.index("| method |")
    assert "Text encoder:" not in zeroshot_tables(_zsl_rows("all-MiniLM-L6-v2"), zeroshot_plan(False))


def test_uda_print_plan_names_the_per_pair_settings_the_tables_ran_with():
    from transferkit.bench import make_plan, plan_yaml

    text = plan_yaml(make_plan("uda", True))
    lines = [line for line in text.splitlines() if "chosen on target validation" in line]
    assert len(lines) == 6 and all(line.startswith("# ") for line in lines)
    assert ("# syndigits → mnist: `dann`: depth=2, hidden=500, layers=conv2, lr_schedule=dann, weight=1.0 "
            "(chosen on target validation)") in lines
    assert text.index("# budget:") < text.index(lines[0])
    only = plan_yaml(make_plan("uda", True, ["methods=coral", "pairs=mnist:digits,mnist:mnistm"]))
    assert "chosen on target validation" not in only
    (mcc,) = [line for line in plan_yaml(make_plan("uda", False, ["methods=mcc", "pairs=mnist:digits"])).splitlines()
              if "chosen" in line]
    assert mcc == "# mnist → digits: `mcc`: detach_weights=False (chosen on target validation)"


def test_uda_table_says_one_epoch_in_the_singular():
    from transferkit.bench.uda import table3, uda_plan

    rows = [{"method": "source_only", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}]
    assert "adaptation 46 steps = 1 epoch of batch 64+64," in table3("mnist", "digits", rows, uda_plan(True), 1, 46)
    assert "= 7 epochs of batch" in table3("mnist", "digits", rows, uda_plan(False), 7, 322)


def test_results_environment_records_the_git_revision_of_the_code(monkeypatch):
    import subprocess
    from pathlib import Path

    from transferkit import compare, runtime

    root = Path(runtime.__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    runtime.source_revision.cache_clear()
    assert runtime.kernel_environment()["revision"] in (head, f"{head}+dirty")
    (line,) = compare.environment_differ_lines([("a", {"revision": "abc"}), ("b", {"revision": "def"})])
    assert "transferkit revision abc in a; def in b" in line

    def no_git(*args, **kwargs):
        raise OSError("no git")

    monkeypatch.setattr(runtime.subprocess, "run", no_git)
    runtime.source_revision.cache_clear()
    try:
        assert runtime.source_revision() is None
    finally:
        runtime.source_revision.cache_clear()
