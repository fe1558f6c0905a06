"""Session 80 leftovers (helper h_left): ``bench.kept_tsne`` keys a kept figure by the drawing style
(``plots.TSNE_STYLE``); a diverged pre-training marks bench flex's and bench represent's rows ``diverged``
(stored in their source records, read back on resume); the diverged line under those suites' own tables;
no host sync per ``matching_ft`` step; one rule for whole-valued float labels in prototypes and matching."""
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


# ---- 4. no host sync per matching_ft step ---------------------------------------------------------------------------
def _matching_ft(scale: float = 10.0):
    from transferkit.backbones import build_backbone
    from transferkit.methods.semantic import FinetunedMatchingNet
    torch.manual_seed(0)
    return FinetunedMatchingNet(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28), scale=scale)


def _losses_before(method, batch):
    """matching_ft's losses as they were (two host syncs per step): the reference of the values."""
    import torch.nn.functional as F

    from transferkit.methods.semantic import _matching_log_probs, first_occurrences
    x, y = batch.target
    once = first_occurrences(batch.indices["target"])
    x, y = x[once], y[once]
    f = method.net.forward_units(x, method.input_unit, "embedding")
    query = first_occurrences(y) & (torch.bincount(y)[y] >= 2)
    if not query.any():
        return {"episode_ce": f.sum() * 0.0}
    logp = _matching_log_probs(f[query], f[~query], y[~query], method.num_target_classes, method.scale)
    return {"episode_ce": F.nll_loss(logp, y[query])}


def _batch(labels, indices=None):
    from transferkit.engine import Batch
    g = torch.Generator().manual_seed(len(labels))
    y = torch.tensor(labels)
    idx = torch.tensor(indices if indices is not None else range(len(labels)))
    return Batch(step=0, progress=0.0, target=(torch.rand(len(y), 1, 28, 28, generator=g), y),
                 indices={"target": idx})


@pytest.mark.parametrize("labels, indices", [([0, 1, 2, 3], None), ([0, 0, 1, 2, 1, 3, 3], None),
                                             ([0, 0, 1, 1, 2], [5, 5, 6, 7, 8])])
@pytest.mark.parametrize("scale", [10.0, 1e4])  # 1e4: probabilities below 1e-8, the log-space values
def test_a_matching_ft_step_takes_no_host_sync_and_gives_the_same_loss_and_gradients(labels, indices, scale,
                                                                                    monkeypatch):
    # before: `if not query.any()` and `bool(tiny.any())` (and first_occurrences' int(max)) synced at every step
    method = _matching_ft(scale)
    method.num_target_classes = 4
    batch = _batch(labels, indices)
    want = _losses_before(method, batch)["episode_ce"]
    want.backward()
    grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
    method.zero_grad(set_to_none=True)
    syncs = []
    for name in ("__bool__", "__int__", "item", "tolist"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _n=name, _r=real: syncs.append(_n) or _r(self, *a))
    got = method.losses(batch)["episode_ce"]
    assert syncs == []
    monkeypatch.undo()
    got.backward()
    assert got.item().hex() == want.item().hex()
    assert grads.keys() == {k for k, p in method.named_parameters() if p.grad is not None}
    assert all(torch.equal(p.grad, grads[k]) for k, p in method.named_parameters() if k in grads)


def test_a_tiny_matching_ft_fit_gives_the_losses_and_weights_of_before(monkeypatch):
    import helpers

    from transferkit.engine import Engine
    from transferkit.methods.semantic import FinetunedMatchingNet
    cfg = TrainConfig(steps=4, batch_size=6, eval_every=1, progress=False)
    fits = []
    for losses in (FinetunedMatchingNet.losses, _losses_before):
        monkeypatch.setattr(FinetunedMatchingNet, "losses", losses)
        method = _matching_ft(1e4)  # probabilities below 1e-8 too
        fit = Engine(cfg, seed=0).fit(method, target=helpers.toy_domain(12))
        fits.append(([float(h["loss"]).hex() for h in fit.history if "loss" in h], method.net.state_dict()))
    (now, net_now), (before, net_before) = fits
    assert len(now) == 4 and now == before
    assert all(torch.equal(v, net_before[k]) for k, v in net_now.items())


# ---- 5. one rule for float labels: prototypes' class_ids and the matching functions ----------------------------
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
