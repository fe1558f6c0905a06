"""Session 80 leftovers (helper h_left): ``bench.kept_tsne`` keys a kept figure by the drawing style
(``plots.TSNE_STYLE``); a diverged pre-training marks bench flex's and bench represent's rows ``diverged``
(stored in their source records, read back on resume); the diverged line under those suites' own tables;
one rule for whole-valued float labels in prototypes and matching."""
import json

import pytest
import torch
from test_bench_core_flex_second_mutation import fake_flex  # noqa: F401 (a fixture)
from test_session80_h_nd import _diverging_engine

from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitWarning


# ---- 1. bench.kept_tsne: a figure of older drawing code is redrawn ---------------------------------------------------
def test_kept_tsne_redraws_a_figure_of_another_drawing_style(monkeypatch, tmp_path):
    # before: the key held the panels, options and scikit-learn's version only, so a resume kept a PNG drawn by
    # older drawing code (target points as dots, long legend names cut off)
    from transferkit import bench, plots
    drawn = []
    monkeypatch.setattr(plots, "tsne_embeddings", lambda panels, path, **kw: drawn.append(path)
                        or path.write_bytes(b"png") and path)
    panels, path = {"a": torch.ones(5, 3)}, tmp_path / "tsne.png"
    assert bench.kept_tsne(panels, path, lambda *a: None, title="t") == path
    bench.kept_tsne(panels, path, lambda *a: None, title="t")
    assert len(drawn) == 1  # the same style: kept
    monkeypatch.setattr(plots, "TSNE_STYLE", getattr(plots, "TSNE_STYLE", 0) + 1, raising=False)
    bench.kept_tsne(panels, path, lambda *a: None, title="t")
    assert len(drawn) == 2  # a newer drawing: redrawn


# ---- 2. a diverged pre-training marks bench flex's and bench represent's rows ---------------------------------------
def test_flex_source_network_records_a_diverged_pre_training_and_reads_it_back(monkeypatch, tmp_path):
    # before: source.json had no diverged flag, so neither a first run nor a resume could mark the rows
    from test_bench_core_flex_third_mutation import _colour_source

    from transferkit.bench import flex
    source, cfg = _colour_source(), TrainConfig(steps=1, batch_size=8, progress=False)
    _diverging_engine(monkeypatch, flex)
    assert flex.source_network(tmp_path, source, cfg, lambda *a: None)[1]["diverged"] is True
    assert json.loads((tmp_path / "source.json").read_text())["diverged"] is True
    with pytest.warns(TransferkitWarning, match=r"is of a pre-training that diverged .*lower pretrain\.lr"):
        assert flex.source_network(tmp_path, source, cfg, lambda *a: None)[1]["diverged"] is True


@pytest.mark.parametrize("diverged", [False, True])
def test_flex_rows_of_a_diverged_source_network_say_so(diverged, monkeypatch, tmp_path, fake_flex):  # noqa: F811
    from transferkit.bench import flex, make_plan
    info = {"val_accuracy": 0.9, **({"diverged": True} if diverged else {})}
    monkeypatch.setattr(flex, "source_network", lambda *a, **k: (torch.nn.Identity(), info))
    flex.flex_suite(make_plan("flex", True, ["targets=mnistm", "ratios=3", "seeds_ratio3=1"]), tmp_path,
                    lambda *a: None)
    rows = [json.loads(p.read_text()) for p in (tmp_path / "jobs").iterdir()]
    assert rows and all(("diverged" in r) is diverged for r in rows)
    assert all(r["diverged"] is True for r in rows if diverged)


def _member_record(pins, i, **record):
    from transferkit.represent import member_dir
    member_dir(pins, i).mkdir(parents=True, exist_ok=True)
    (member_dir(pins, i) / "source.json").write_text(json.dumps({"val_accuracy": 0.5, **record}))


@pytest.mark.parametrize("member, distill, marked", [
    (None, False, set()), (1, False, {"cat2", "distill"}), (0, False, {"erm", "cat2", "distill"}),
    (None, True, {"distill"})])
def test_represent_rows_built_on_a_diverged_member_or_distillation_say_so(member, distill, marked, monkeypatch,
                                                                          tmp_path):
    # before: a diverged member (its source.json said so) or distillation left every row unmarked
    from test_bench_represent_second_mutation import _fake_suite
    bench = _fake_suite(monkeypatch)
    pins = tmp_path / "nets" / "mnist-digits"
    for i in range(2):
        _member_record(pins, i, **({"diverged": True} if i == member else {}))
    if distill:
        (tmp_path / "nets" / "distill-mnist-digits.json").write_text(json.dumps({"diverged": True}))
    plan = bench.RepresentPlan(pairs=[("mnist", "digits")], n_max=2, cats=[2], sizes=[3], seeds=[0])
    rows = bench.represent_suite(plan, tmp_path, lambda *a: None)
    assert {r["method"].split("/")[0] for r in rows} == {"erm", "cat2", "distill"}
    assert {r["method"].split("/")[0] for r in rows if r.get("diverged") is True} == marked
    assert all(r.get("diverged", True) is True for r in rows)


@pytest.mark.parametrize("diverged", [False, True])
def test_the_distillation_s_record_says_whether_it_diverged(diverged, monkeypatch, tmp_path):
    # before: the distilled network had no record: a resume could not tell a diverged distillation
    from types import SimpleNamespace

    from helpers import fit_result, tiny_net
    from test_bench_represent_second_mutation import _data

    from transferkit.bench import represent as bench
    monkeypatch.setattr(bench, "distill_network", lambda members, make_net, *a: (make_net(),
                                                                                 fit_result(diverged=diverged)))
    path = tmp_path / "distill-mnist-digits.safetensors"
    bench._distilled(SimpleNamespace(seed=0, backbone="lenet", image_size=28), _data(), [tiny_net(4)],
                     SimpleNamespace(distill=1), path, lambda *a: None)
    assert path.is_file() and (json.loads(path.with_suffix(".json").read_text()).get("diverged") is True) is diverged


# ---- 3. the diverged line under bench flex's and bench represent's own tables ----------------------------------
def _without_line(text: str) -> str:
    """``text`` less its Diverged line and the blank line before it."""
    lines = text.splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if line.startswith("Diverged ("))
    return "".join(lines[:i - 1] + lines[i + 1:])


def test_flex_table_names_its_diverged_rows_below_and_is_unchanged_without():
    # before: table_ratio*.md had no line naming diverged rows (results.md had one)
    from test_bench_flex import _rows

    from transferkit.bench.flex import table3
    rows, base = _rows(), {"t": 0.5}
    plain = table3(rows, base, 30)
    assert "Diverged" not in plain
    rows[0]["diverged"] = True
    text = table3(rows, base, 30)
    assert text.endswith(f"|\n\nDiverged (the training loss, or the pre-training's it started from, grew a "
                         f"thousandfold; diverged in results.json): {rows[0]['method']} (seed 0); such an accuracy is "
                         f"not worth reading (lower the learning rate).\n")
    assert _without_line(text) == plain  # the table itself, byte for byte
    assert "Diverged" not in table3(rows, base, 3)  # another ratio's table: not its rows


def test_represent_tables_name_their_diverged_rows_below_each_table():
    from test_bench_other_mutation import _represent_rows

    from transferkit.bench.represent import represent_tables
    rows = _represent_rows()
    plain = represent_tables(rows)
    assert "Diverged" not in plain
    rows[1]["diverged"] = True  # distill/finetune, mnist -> digits: the first pair's transfer table
    text = represent_tables(rows)
    assert "\n| zzz/linear_probe | - | 10.0 | - |\n\nDiverged (" in text and "distill/finetune (seed 0)" in text
    assert _without_line(text) == plain
    rows[1]["diverged"], rows[9]["diverged"] = False, True  # distill/fewshot_linear: the episodic table
    text = represent_tables(rows)
    assert text.endswith("distill/fewshot_linear (seed 0); such an accuracy is not worth reading (lower the learning "
                         "rate).\n") and _without_line(text) == plain


# ---- 4. one rule for float labels: prototypes' class_ids and the matching functions ----------------------------
@pytest.mark.parametrize("name", ["matching_log_probs", "nearest_support_scores"])
def test_matching_takes_whole_float_labels_as_class_means_do_and_refuses_what_class_ids_refuses(name):
    # before: float support labels were refused outright, while heads.class_means took whole-valued floats
    from transferkit.errors import TransferkitError
    from transferkit.heads import class_means
    from transferkit.methods import semantic
    fn = getattr(semantic, name)
    q, s, labels = torch.randn(3, 4), torch.randn(4, 4), torch.tensor([0, 1, 2, 1])
    assert torch.equal(class_means(s, labels.double(), 3), class_means(s, labels, 3))
    assert torch.equal(fn(q, s, labels.double(), 3), fn(q, s, labels, 3))
    for bad in (labels.float() + 0.5, labels.float().index_fill(0, torch.tensor([1]), float("nan")), labels.bool()):
        with pytest.raises(TransferkitError, match=rf"^{name}: support labels must be whole class ids, got a tensor "):
            fn(q, s, bad, 3)
        with pytest.raises(TransferkitError, match="whole class ids"):
            class_means(s, bad, 3)
