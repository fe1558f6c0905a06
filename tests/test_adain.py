"""adain (seed 003's AdaIN style transfer as pixel-level adaptation): the normalisation and
losses on known values, which module each stage trains, refusals, and a run."""

import json

import pytest
import torch
from helpers import changed, seeded_lenet, state_copy

from transferkit.engine import Batch, Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.methods import get_method
from transferkit.methods.adain import adain, channel_stats, style_loss


def test_adain_gives_the_content_the_style_s_channel_statistics():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(2, 3, 5, 5, generator=g) * 2 + 1
    style = torch.randn(2, 3, 5, 5, generator=g) * 0.5 - 3
    out = adain(content, style)
    (mo, so), (ms, ss) = channel_stats(out), channel_stats(style)
    torch.testing.assert_close(mo, ms, atol=1e-5, rtol=0)
    torch.testing.assert_close(so, ss, atol=1e-4, rtol=1e-4)
    # the content's normalised pattern is kept: AdaIN of x with its own statistics is x
    torch.testing.assert_close(adain(content, content), content, atol=1e-4, rtol=1e-4)
    x = torch.tensor([[[[1.0, 3.0]]]])  # mean 2, std 1 (population)
    y = torch.tensor([[[[10.0, 14.0]]]])  # mean 12, std 2
    torch.testing.assert_close(adain(x, y), torch.tensor([[[[10.0, 14.0]]]]), atol=1e-3, rtol=0)


def test_style_loss_is_zero_for_the_same_statistics_and_counts_mean_and_spread():
    a = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    assert style_loss([a], [a]).item() == 0.0
    assert style_loss([a], [a[:, :, torch.randperm(6)]]).item() < 1e-10  # positions do not matter
    shifted = style_loss([a + 1.0], [a]).item()  # every channel mean off by 1
    assert shifted == pytest.approx(1.0, abs=1e-5)
    assert style_loss([a * 3], [a]).item() > 0.5 and style_loss([a, a + 1], [a, a]).item() == pytest.approx(1.0, 1e-4)


def _batch(channels=1):
    g = torch.Generator().manual_seed(2)
    return Batch(step=0, progress=0.0, source=(torch.rand(6, channels, 28, 28, generator=g), torch.arange(6)),
                 unlabeled=torch.rand(4, channels, 28, 28, generator=g))


def _reached(method, terms):
    method.zero_grad()
    sum(terms.values()).backward()
    return {n.split(".")[0] for n, p in method.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_stage_one_trains_the_decoder_and_stage_two_the_task_network_never_the_encoder():
    method = get_method("adain")(seeded_lenet())
    assert method.layer == "conv1" and method.style_layers == ["conv1"]
    method.stage = 1
    method.prepare({})
    terms = method.losses(_batch())
    assert set(terms) == {"content", "style"} and all(v.item() > 0 for v in terms.values())
    assert _reached(method, terms) == {"decoder"}
    assert {id(p) for g in method.param_groups() for p in g["params"]} == {id(p) for p in method.decoder.parameters()}
    method.stage = 2
    method.prepare({})
    terms = method.losses(_batch())
    assert set(terms) == {"ce_styled"}
    assert _reached(method, terms) == {"net"}
    deep = get_method("adain")(seeded_lenet(), layer="conv2", source_weight=1.0, entmin_weight=0.1)
    assert deep.style_layers == ["conv1", "conv2"]
    deep.stage = 2
    assert set(deep.losses(_batch())) == {"ce_styled", "ce_source", "entmin"}
    styled = deep.stylise(_batch().source[0], _batch().unlabeled)
    assert styled.shape == (6, 1, 28, 28) and 0 <= styled.min() and styled.max() <= 1


def test_the_encoder_maps_come_from_the_cache_of_each_stream_as_computed_afresh():
    method = get_method("adain")(seeded_lenet(), layer="conv2")
    g = torch.Generator().manual_seed(4)
    x_s, x_t = torch.rand(10, 1, 28, 28, generator=g), torch.rand(7, 1, 28, 28, generator=g)
    i_s, i_t = torch.tensor([9, 2, 5, 0]), torch.tensor([6, 1, 3])  # 4 source images, styles cycle through 3
    batch = Batch(step=0, progress=0.0, source=(x_s[i_s], torch.arange(4)), unlabeled=x_t[i_t],
                  indices={"source": i_s, "unlabeled": i_t})
    method.input_cache = method.cache_inputs({"source": x_s, "unlabeled": x_t})  # what the engine keeps
    assert set(method.input_cache) == {"content", "style"} and len(method.input_cache["content"]) == 10
    for stage in (1, 2):
        method.stage = stage
        cached = method.losses(batch)
        method.input_cache, kept = {}, method.input_cache
        fresh = method.losses(batch)
        method.input_cache = kept
        for name in fresh:
            torch.testing.assert_close(cached[name], fresh[name], atol=1e-6, rtol=1e-6, msg=name)


def test_fit_runs_the_decoder_stage_then_the_task_stage():
    from helpers import toy_domain
    method = get_method("adain")(seeded_lenet(), decoder_steps=3)
    net0, dec0 = state_copy(method.net), state_copy(method.decoder)
    enc0 = state_copy(method.encoder)
    cfg = TrainConfig(steps=2, eval_every=2, batch_size=8)
    seen = []

    def make_engine(tag):
        seen.append((tag, method.stage))
        return Engine(cfg, seed=0)
    src = toy_domain(16, classes=10, name="src")
    tgt = toy_domain(16, seed=1, classes=10, name="tgt")
    fit = method.fit_transfer(make_engine, source=src, unlabeled=tgt, val=src)
    assert seen == [("decoder", 1), ("main", 2)] and fit.steps == 5
    assert changed(dec0, state_copy(method.decoder)) and changed(net0, state_copy(method.net))
    assert not changed(enc0, state_copy(method.encoder))
    assert method.extra_results()["fit_wall_s"] > 0


def test_refusals_are_named():
    net = seeded_lenet()
    with pytest.raises(TransferkitError, match=r"layer must be a unit with a spatial output .*\['conv1', 'conv2'\], "
                                               r"got 'fc1'"):
        get_method("adain")(net, layer="fc1")
    with pytest.raises(TransferkitError, match=r"alpha .* must be in \[0, 1\], got 2"):
        get_method("adain")(net, alpha=2)
    with pytest.raises(TransferkitError, match="task_weight and source_weight are both 0"):
        get_method("adain")(net, task_weight=0.0)
    with pytest.raises(TransferkitError, match="decoder_steps must be a whole number >= 1"):
        get_method("adain")(net, decoder_steps=0)
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    mlp = from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 3)), units=[3],
                          input_shape=(1, 28, 28))
    with pytest.raises(TransferkitError, match="no unit with a spatial output"):
        get_method("adain")(mlp)


def test_the_cli_runs_adain_without_target_labels(tmp_path):
    from transferkit.cli import main
    rc = main(["run", "--set", "source=mnist", "--set", "target=mnistm", "--set", "backbone=lenet",
               "--set", "methods=[adain]", "--set", "k=null", "--set", "repeats=1", "--set", "select_on=none",
               "--set", "pretrain.steps=10", "--set", "train.steps=3", "--set", "train.batch_size=16",
               "--set", "options.adain.decoder_steps=2", "--set", f"out_dir={tmp_path}"])
    assert rc == 0
    row = json.loads(next(tmp_path.rglob("results.json")).read_text())["rows"][0]
    assert row["method"] == "adain" and row["n_labeled"] == 0 and row["steps"] == 5
