"""Tests from a second mutation pass over stop 72's changes (the code changed since 5f414df): the
episodes' advice for one K (no "(every K asked)"); ``bench --resume --nproc`` taking its runs'
device before it builds the resumed plan; the grey-images hint of torch images (``expand``); a
folder named as a built-in domain in capitals (still the built-in) (a domain builder's NumPy images
with torch labels, NumPy's spelling: in test_bad_input_second.py's test of both spellings);
``unique_ids``' default advice (``groups=None``); ``latex_table`` of rows told its own call; the
frozen memo's limit read when used (a bad value named then, a later value seen); uda_tune's plan
checked as uda's (its ``__post_init__`` checks kept); the tables each suite declares as its outputs
(those it writes); the t-SNE figure's record keyed by scikit-learn's version; failures_message
naming five failures and "1 more" of six. Each test fails when the code it names is changed in the
way its comment says.

Judged equivalent, so not tested: ``_three_dim_hint``'s ``transpose.startswith("images.transpose")``
as ``"transpose" in transpose`` or ``not transpose.startswith("images.permute")`` (the caller gives
only those two spellings); ``parse_spec`` without ``base != base.lower()`` (a lower-case name that
is neither a domain nor registered is refused later as an unknown domain either way) and without
``os.path.exists(base)`` (both checks below it test the path); ``tsne_figure``'s key without its
title or domain names (the figure's path names the domains, and the seed in the title draws other
points). Killed by older tests, so not tested here: the episodes' fit taken from the first K, the
queries' ``fits >= 1``, tap's ``y.max() + 1``, ``_checked_for_torchrun`` with the checks alone,
``_apply_runtime_flags`` without ``limit_from_env``, ``parse_spec`` without the file check,
grouped_accuracy's ``instead``, mcc's ``>= 2``, a lazy limit read as ``_limit_mb or ...`` and its
setter dropped, every clearing and restoring of a suite's outputs in ``run_benchmark``, fewshot's
figures of dropped parts, uda_tune's ``selects``, its quick/full seeds and pairs, the quick budget's
t-SNE points, the t-SNE record without its ``is_file``, clip's validation classes compared with all
of class_names, ``limit_from_env`` taking NaN, parse_spec's folder check as a file check, the
episodes' ``len(per_class) >= n_way``. Left surviving: ``_finished_files`` returning the job files
when none of the kept files exists (a refused resume of a directory with no plan.json nor results
then only puts back what was there: no visible difference found in the time given)."""
import re
from pathlib import Path

import pytest
import torch

from transferkit.errors import TransferkitError

# -- advice -------------------------------------------------------------------------------------


def test_the_queries_that_fit_one_k_are_not_said_to_fit_every_k():
    # kills _check_episodes_fit: `len(set(k_shots)) > 1` -> `len(k_shots) > 0` ("(every K asked)" of one K)
    from transferkit.domain import Domain
    from transferkit.fewshot_eval import _check_episodes_fit
    test = Domain("t", torch.rand(30, 1, 4, 4), torch.arange(30) % 3, ["0", "1", "2"])
    with pytest.raises(TransferkitError, match=r"--n-query 8 fits it") as e:
        _check_episodes_fit(test, 3, [2], 9)
    assert "every K" not in str(e.value)
    _check_episodes_fit(test, 3, [2], 8)


def test_grey_torch_images_for_a_colour_model_get_torch_s_spelling():
    # kills _three_dim_hint: numpy.repeat given for every kind of images (torch tensors have no numpy.repeat)
    from transferkit.domain import image_batch
    grey = torch.rand(5, 28, 28)
    with pytest.raises(TransferkitError, match=r"images\[:, None\]\.expand\(-1, 3, -1, -1\)") as e:
        image_batch(grey, "predict", (3, 28, 28), exact=True)
    assert "numpy" not in str(e.value)
    assert image_batch(grey[:, None].expand(-1, 3, -1, -1), "predict", (3, 28, 28), exact=True).shape == (5, 3, 28, 28)


def test_a_folder_named_as_a_built_in_domain_in_capitals_is_the_built_in(tmp_path, monkeypatch):
    # kills parse_spec: `base.lower() not in BUILTINS` dropped (a folder MNIST here made "MNIST" refused)
    from transferkit.data import parse_spec
    monkeypatch.chdir(tmp_path)
    (tmp_path / "MNIST" / "a").mkdir(parents=True)
    assert parse_spec("MNIST+blur") == ("mnist", ["blur"])
    (tmp_path / "Other" / "a").mkdir(parents=True)
    with pytest.raises(TransferkitError, match=r"give it as folder:Other"):
        parse_spec("Other")


def test_ids_all_missing_are_told_to_be_left_out_by_default():
    # kills unique_ids: its default `instead` changed (a domain's or a figure's all-None ids told no fix)
    from transferkit.evaluate import unique_ids
    with pytest.raises(TransferkitError, match=r"group ids are all None .*or no ids at all \(groups=None\)"):
        unique_ids([None, None], "group ids")


def test_latex_table_of_rows_is_told_its_own_call():
    # kills check_summary: `who == "csv_table"` -> `who != "markdown_table"`, and the call always markdown_table's
    from transferkit.tables import latex_table
    rows = [{"method": "ft", "seed": s, "accuracy": 0.8} for s in range(2)]
    with pytest.raises(TransferkitError, match=r"give summarize\(rows\), latex_table\(summarize\(rows\), rows\)$"):
        latex_table(rows)


# -- the frozen memo's limit --------------------------------------------------------------------

def test_the_memo_s_limit_is_read_from_the_environment_when_used(monkeypatch):
    # kills FrozenMemo.__init__ reading $TRANSFERKIT_FROZEN_MEMO_MB when made (a traceback at import, a later value
    # not seen)
    from transferkit.frozen import LIMIT_ENV, FrozenMemo
    monkeypatch.setenv(LIMIT_ENV, "abc")
    memo = FrozenMemo()  # made (as the module's memo is, at import) without reading it
    with pytest.raises(TransferkitError, match=LIMIT_ENV):
        _ = memo.limit_mb
    monkeypatch.setenv(LIMIT_ENV, "7")
    assert memo.limit_mb == 7 and FrozenMemo(3).limit_mb == 3


# -- benchmarks ---------------------------------------------------------------------------------

def test_bench_resumed_under_nproc_takes_its_runs_device_before_it_builds_the_plan(tmp_path, monkeypatch):
    # kills _checked_for_torchrun: `_resume_bench_device` dropped (or moved after resumed_plan)
    import transferkit.bench as bench
    import transferkit.runtime as runtime
    from transferkit import cli
    calls = []
    monkeypatch.setattr(cli, "_resume_bench_device", lambda resume: calls.append(("device", resume)))
    monkeypatch.setattr(bench, "resumed_plan", lambda *a: calls.append(("plan", a[3])))
    monkeypatch.setattr(runtime, "check_processes_have_gpus", lambda device, nproc: None)
    monkeypatch.setattr(cli, "_check_bench_resume", lambda args: None)
    monkeypatch.delenv("TRANSFERKIT_DEVICE", raising=False)
    args = cli.build_parser().parse_args(["bench", "demo", "--quick", "--resume", str(tmp_path), "--nproc", "2"])
    assert cli._checked_for_torchrun(args)
    assert calls == [("device", str(tmp_path)), ("plan", str(tmp_path))]


def test_uda_tune_s_plan_is_checked_as_uda_s():
    # kills TuneBudget.__post_init__: `super().__post_init__()` dropped (a batch size of 0 accepted)
    from transferkit.bench import make_plan
    with pytest.raises(TransferkitError, match=r"batch_size"):
        make_plan("uda_tune", True, ["batch_size=0"])
    assert make_plan("uda_tune", False).seeds == (0, 1, 2)


def test_each_suite_declares_the_tables_it_writes_as_its_outputs():
    # kills the outputs= of fewshot, represent, uda, uda_tune (selected.json) and zeroshot dropped: a resume left
    # the earlier plan's tables beside a plan.json that said otherwise
    import transferkit.bench as bench
    suites = dict(bench.load_suites())
    written = re.compile(r'write_(?:text|json)\((?:Path\()?bench_dir\)? / "([\w.]+)"')
    expected = {}
    for name in suites:
        source = (Path(bench.__file__).parent / f"{name}.py").read_text()
        expected[name] = set(written.findall(source)) - {"results.json", "results.md", "plan.json"}
    assert expected["uda_tune"] == {"uda_tune.md", "selected.json"} and expected["fewshot"] == {"fewshot.md"}
    for name, files in expected.items():
        assert files <= set(bench.OUTPUTS[name]), name


def test_a_t_sne_figure_of_another_scikit_learn_is_drawn_again(tmp_path, monkeypatch):
    # kills tsne_figure: scikit-learn's version left out of the record's key
    import importlib.metadata

    from test_bench_uda_second_mutation import _fake_tsne

    import transferkit.bench.uda as uda
    import transferkit.plots as plots
    _, drawn, _ = _fake_tsne(monkeypatch, tmp_path)
    monkeypatch.setattr(plots, "tsne_embeddings", lambda panels, path, **kw: drawn.append(path)
                        or path.write_bytes(b"png") and path)
    b = uda.UdaPlan(seeds=(5,), pairs="mnist:digits", methods="dann", tsne_points=10)
    uda.tsne_figure(tmp_path, "mnist", "digits", b, lambda *a: None)
    uda.tsne_figure(tmp_path, "mnist", "digits", b, lambda *a: None)
    assert len(drawn) == 1
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0" if name == "scikit-learn" else real(name))
    uda.tsne_figure(tmp_path, "mnist", "digits", b, lambda *a: None)
    assert len(drawn) == 2


def test_six_failed_jobs_name_five_and_one_more():
    # kills failures_message: `len(failures) > 5` -> `> 6` (the sixth failure silently left out)
    from transferkit.jobs import JobFailure, failures_message
    failures = [JobFailure(f"E{i}", "", job=f"j{i}") for i in range(6)]
    message = failures_message(failures, 9, "kept", "again")
    assert message.startswith("6 of 9 job(s) failed: j0 (E0)") and "j4 (E4) and 1 more job;" in message
    assert "j5" not in message
