"""Numerical robustness (audit h_fi): a diverged pre-training is not cached, a loss that rises from a small
start warns, non-finite BatchNorm statistics are refused, and a metrics line holds no bare Infinity."""
import json
import warnings

import helpers
import pytest
import torch
from test_engine_mutation import custom

from transferkit import source
from transferkit.config import ExperimentConfig
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.methods.supervised import SourceOnly
from transferkit.rundata import Prepared
from transferkit.splits import Split

QUIET = {"log": lambda *a: None}


def _cfg(**train) -> TrainConfig:
    return TrainConfig(**{"steps": 6, "batch_size": 8, "eval_every": 2, "lr": 1e-9, "progress": False, **train})


def _scaled(first: float, later: float):
    """A loss of the target's cross-entropy times ``first`` at step 0 and times ``later`` after it."""
    def losses(method, batch):
        return {"ce": method.supervised(batch.target) * (first if batch.step == 0 else later)}
    return losses


def _strict(line: str) -> dict:
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(line, parse_constant=refuse)


# ---- 1. a diverged pre-training ----------------------------------------------------------------------------------
class _Exploding(SourceOnly):
    def losses(self, batch):
        return {"ce": self.supervised(batch.source) * (1.0 if batch.step == 0 else 1e8)}


def _data() -> Prepared:
    parts = [helpers.toy_domain(n, seed=i) for i, n in enumerate((32, 12, 12))]
    return Prepared(source=Split(*parts), target=Split(*parts), channels=1)


def _diverging_config(monkeypatch, tmp_path) -> ExperimentConfig:
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(source, "SourceOnly", _Exploding)
    pre = _cfg(steps=4, lr=7.0)
    return ExperimentConfig(source="toy", target="toy", backbone="lenet", k=2, pretrain=pre, train=pre)


def test_a_diverged_pretraining_is_not_cached_and_its_warning_names_pretrain_lr(monkeypatch, tmp_path):
    # before: "method 'source_only': ... (lr 7)", the network cached and read back by the next run without a word
    cfg, data = _diverging_config(monkeypatch, tmp_path), _data()
    for _ in range(2):  # the second run pre-trains (and warns) again
        with pytest.warns(TransferkitWarning, match=r"the pre-training of lenet on toy \(method 'source_only'\): "
                                                    r"the training loss grew .* diverged.*\(pretrain\.lr 7\)"):
            net, info = source.pretrain_source(cfg, data, **QUIET)
        assert info["diverged"] is True and info["cached"] is False
    cached = list((tmp_path / "cache" / "pretrained").glob("*.safetensors"))
    assert [p.name.endswith(".diverged.safetensors") for p in cached] == [True]


def test_a_run_pinned_to_a_diverged_pretraining_warns_on_every_read_back(monkeypatch, tmp_path):
    cfg, data = _diverging_config(monkeypatch, tmp_path), _data()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.warns(TransferkitWarning, match="diverged"):
        source.run_source_network(cfg, data, run_dir, **QUIET)
    assert json.loads((run_dir / "source.json").read_text())["diverged"] is True
    with pytest.warns(TransferkitWarning, match=r"pinned in .* is of a pre-training that diverged"):
        source.run_source_network(cfg, data, run_dir, **QUIET)  # a resume


def test_an_ordinary_fit_is_not_marked_diverged_and_an_exploding_one_is():
    assert Engine(_cfg(lr=1e-3)).fit(custom(), target=helpers.toy_domain(16)).diverged is False
    with pytest.warns(TransferkitWarning, match="diverged"):
        fit = Engine(_cfg()).fit(custom(_scaled(1.0, 1e8)), target=helpers.toy_domain(16))
    assert fit.diverged is True


# ---- 2. a loss that rises from a small start ---------------------------------------------------------------------
def test_a_loss_that_grows_from_a_small_start_past_a_thousand_times_warns():
    # before: the limit was 1000 * max(first, 1.0): 0.14 -> 700 (a good source network fine-tuned at lr 1) passed
    with pytest.warns(TransferkitWarning, match=r"grew from 0\.1\d* \(before any update\) to .* the training "
                                                r"diverged.*\(lr 1e-09\)") as w:
        fit = Engine(_cfg()).fit(custom(_scaled(0.1, 500.0)), target=helpers.toy_domain(16))
    assert sum("diverged" in str(m.message) for m in w) == 1 and fit.diverged


def test_a_tiny_loss_that_stays_tiny_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = Engine(_cfg()).fit(custom(_scaled(1e-6, 1e-3)), target=helpers.toy_domain(16))
    assert not fit.diverged


# ---- 3. non-finite buffers ---------------------------------------------------------------------------------------
def _bn_net():
    from transferkit.backbones import build_backbone
    torch.manual_seed(0)
    net = build_backbone("convnet4", 4, in_channels=1, image_size=28)
    net.class_names = ["0", "1", "2", "3"]
    return net


def test_nan_batchnorm_statistics_in_the_starting_network_are_refused_and_named():
    # before: the fit returned a model whose every output was NaN (with val=: "lower the learning rate")
    from transferkit.api import Transfer
    net = _bn_net()
    name = next(n for n, b in net.named_buffers() if n.endswith("running_var"))
    with torch.no_grad():
        dict(net.named_buffers())[name][0] = float("nan")
    with pytest.raises(TransferkitError, match=rf"at step 0 \(before any update\): the starting weights hold NaN or "
                                               rf"infinite values \(net\.{name} \(a buffer\)\)"):
        Transfer("finetune", train=_cfg(steps=2, lr=1e-3)).fit(target=helpers.toy_domain(16), net=net)


def test_a_buffer_that_becomes_nan_is_refused_before_a_checkpoint_is_saved(tmp_path):
    # before: parameters alone were checked, and a checkpoint of the NaN statistics was saved
    def losses(method, batch):
        if batch.step == 1:
            method.running_var.fill_(float("nan"))
        return {"ce": method.supervised(batch.target)}
    method = custom(losses)
    method.register_buffer("running_var", torch.zeros(3))  # a running statistic's name (session 78's review)
    with pytest.raises(TransferkitError, match=r"running_var \(a buffer\) became NaN or infinite by step 2"):
        Engine(_cfg(checkpoint_every=2), checkpoint_dir=tmp_path / "ckpt").fit(method, target=helpers.toy_domain(16))
    assert not (tmp_path / "ckpt" / "last.safetensors").exists()


# ---- 4. metrics lines ----------------------------------------------------------------------------------------------
def test_a_window_of_losses_near_the_float32_limit_is_logged_finite(tmp_path):
    # before: two finite losses of ~2e38 summed in float32 to inf, logged as a bare Infinity
    metrics = tmp_path / "metrics.jsonl"
    fit = Engine(_cfg(steps=2), metrics_path=metrics).fit(custom(_scaled(1.5e38, 1.5e38)),
                                                          target=helpers.toy_domain(16))
    line = _strict(metrics.read_text().splitlines()[0])
    assert 1e38 < line["loss"] < float("inf") and line["loss"] == pytest.approx(fit.history[0]["loss"])


def test_a_metrics_line_writes_a_non_finite_number_as_null(tmp_path):
    from transferkit.io import append_jsonl, read_jsonl
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"loss": float("inf"), "terms": [float("nan"), 1.5], "step": 3})
    assert _strict(path.read_text().splitlines()[0]) == {"loss": None, "terms": [None, 1.5], "step": 3}
    assert read_jsonl(path) == [{"loss": None, "terms": [None, 1.5], "step": 3}]
