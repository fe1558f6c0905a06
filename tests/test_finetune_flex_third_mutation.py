"""Tests from a third mutation pass over the fine-tuning family (``methods/finetune.py``) and
flex-tuning (``methods/flex.py``, seed 002 Algorithms 1-3), after ``test_finetune_flex_mutation.py``
and ``test_finetune_flex_second_mutation.py``: fully connected units that stop at a 1-D convolution,
the module attribute ``FtUnit_`` (no unit name), a ``ScaleShift`` pickled before ``last_dim``, the
attention weights an attention's scale/shift hook hands on,
kernel scaling of 1-D and 3-D convolutions and channel scaling of a 1-D one; fast_flex and
faster_flex with an empty target, the "k of n images" and fast_flex's advice in the proxy tie
warning; flex's ``image_lr_mult`` and ``workers`` reaching the candidate trainings, a flex model
pickled before ``picked_units``, a second fit that picks its image unit again, and ``val=None``.
Candidate trainings are scripted (the helpers of ``test_finetune_flex_second_mutation.py``), so no
test trains. Each test fails when the code its comment names is changed in the way it says.

Judged equivalent, so not tested: ``val_scores``' ``/ len(correct) if len(correct) else 0.0`` ->
``/ max(len(correct), 1)`` (0 / 1 is 0.0); ``_adopt``'s ``picked_units`` in network order -> in
``_units_of``'s order (already network order); fast_flex's ``use_all = not self.one_epoch and ...`` ->
``a_all is not None and ...`` (``a_all`` is None exactly under one epoch); ``candidate_method``'s
``split(":", 1)[1]`` -> ``split(":")[-1]`` (no image unit kind has a colon); ``_FlexBase``'s
``workers >= 1`` check dropped and ``bool(keep_candidates)`` -> ``keep_candidates`` (the option checks
refuse a workers below 1 and a keep_candidates that is no bool before ``__init__`` runs);
``selection_margin``'s exact count difference -> ``float(d.mean())`` (in float64 the same for any
validation set size that fits in memory); ``TwoStage.trainable_units``' ``stage == 1`` -> ``stage != 2``
(the stage is 1 or 2). Left surviving: none of those tried; ``not_trained_options`` without
``keep_candidates`` is killed by ``test_methods_base_mutation.py``.
"""

import pytest
import torch
import torch.nn as nn
from helpers import toy_domain
from test_finetune_flex_second_mutation import FLEX_SCORES, OneUnit, engines, lenet, scripted_trainings

from transferkit.backbones import from_sequential
from transferkit.errors import TransferkitError
from transferkit.methods import finetune as finetune_module
from transferkit.methods import flex as flex_module
from transferkit.methods import get_method
from transferkit.methods.finetune import ScaleShift, add_scale_shift, fc_units
from transferkit.methods.flex import FastFlex, Flex

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- ft_unit, ft_ss ------------------------------------------------------------------------


def test_an_empty_ft_unit_class_name_is_no_attribute():
    # kills finetune.__getattr__: dropped `and name[len("FtUnit_"):]` (made a class for the unit "")
    assert not hasattr(finetune_module, "FtUnit_")


def test_a_scale_shift_pickled_before_last_dim_scales_channels():
    # kills ScaleShift: class default `last_dim = False` -> True (a saved run's module without the attribute)
    ss = ScaleShift(3)
    del ss.last_dim  # as a module pickled before the option: its __dict__ has no last_dim
    with torch.no_grad():
        ss.scale.copy_(torch.tensor([1.0, 2.0, 3.0]))
        y = torch.ones(2, 3, 4, 4)
        assert torch.equal(ss(y), torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4))


def test_scale_shift_of_an_attention_keeps_its_attention_weights():
    # kills _attention_scale_shift_hook: the attention weights dropped (None) from the output
    attn = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.rand(2, 5, 8)
    with torch.no_grad():
        _, plain = attn(x, x, x)
        ss, = add_scale_shift(OneUnit(attn), ["block"])
        ss.shift.fill_(1.0)
        out, weights = attn(x, x, x)
    assert weights is not None and torch.allclose(weights, plain)
    assert out.shape == (2, 5, 8)


def test_fc_units_stop_at_a_1d_convolution():
    # kills fc_units: `nn.modules.conv._ConvNd` -> `nn.Conv2d` (a Conv1d unit counted as fully connected)
    seq = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26, 4))
    net = from_sequential(seq, input_shape=(1, 28))
    assert fc_units(net) == ["head"]
    assert get_method("ft_fc")(net).trainable_units() == ["head"]


@pytest.mark.parametrize("dims", [1, 3])
def test_kernel_scaling_of_1d_and_3d_convolutions(dims):
    # kills KernelScaleShift: `(1,) * (conv.weight.dim() - 2)` -> (1, 1) (a 2-D kernel's shape on every convolution)
    conv, x = (nn.Conv1d, nn.Conv3d)[dims // 2](4, 6, 3), torch.rand((2, 4) + (5,) * dims)
    with torch.no_grad():
        plain = conv(x)
    ss, = add_scale_shift(OneUnit(conv), ["u"], kernel=True)
    assert ss.scale.shape == (6, 4) + (1,) * (x.dim() - 2)
    with torch.no_grad():
        assert torch.allclose(conv(x), plain)  # the identity at the start
        ss.scale.fill_(2.0)
        bias = conv.bias.view((1, -1) + (1,) * (x.dim() - 2))
        assert torch.allclose(conv(x), 2 * (plain - bias) + bias, atol=1e-5)


def test_channel_scaling_of_a_1d_convolution_keeps_its_output_shape():
    # kills ScaleShift.forward: the view `(1, -1) + (1,) * (y.dim() - 2)` -> (1, -1, 1, 1) (an N x C x L output)
    conv, x = nn.Conv1d(4, 6, 3), torch.rand(2, 4, 9)
    with torch.no_grad():
        plain = conv(x)
        ss, = add_scale_shift(OneUnit(conv), ["u"], kernel=False)
        ss.scale.fill_(2.0)
        assert torch.allclose(conv(x), 2 * plain)


# ---- fast_flex, faster_flex ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fast_flex", "faster_flex"])
def test_fast_flex_with_an_empty_target_says_so_before_training(name, monkeypatch):
    # kills FastFlex.fit_transfer: `len(target) > 0` dropped from the target check
    monkeypatch.setattr(flex_module, "train_candidates", lambda jobs, workers=1: pytest.fail("trained"))
    empty = toy_domain(8).subset(torch.zeros(8, dtype=torch.bool))
    with pytest.raises(TransferkitError, match="tunes on labelled target images; none were given"):
        get_method(name)(lenet()).fit_transfer(engines([]), target=empty, val=toy_domain(8, seed=1))


def test_a_proxy_tie_under_accuracy_counts_the_images_right(monkeypatch):
    # kills FastFlex._tie_message: "k of n images" dropped under accuracy; fast_flex's advice without flex
    scripted_trainings(monkeypatch, {"surgery-all": (0.5, 1.0, 1), "tune-conv2": (0.75, 0.5, 3)})
    monkeypatch.setattr(flex_module, "proxy_accuracies", lambda base, donor, units, domain, **kw: {
        u: 0.5 if u in ("conv2", "fc1") else 0.25 for u in units})
    with pytest.warns(UserWarning, match=r"tie at the best validation accuracy 50\.0% \(4 of 8 images\)") as caught:
        FastFlex(lenet()).fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))
    assert "flex trains every unit instead" in str(caught[0].message)


def test_flex_trains_its_image_candidates_at_their_own_learning_rate(monkeypatch):
    # kills Flex.__init__: dropped `self.image_lr_mult = float(image_lr_mult)` (image candidates at lr_mult 1)
    jobs = []

    def recording(js, workers=1):
        jobs.extend(js)
        raise KeyboardInterrupt  # nothing to train: the jobs are all this test reads

    monkeypatch.setattr(flex_module, "train_candidates", recording)
    with pytest.raises(KeyboardInterrupt):
        Flex(lenet(), image_units=["colour"], image_lr_mult=30).fit_transfer(
            engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))
    mults = {engine.tag: [g.get("lr_mult", 1.0) for g in method.param_groups()] for engine, method, _, _ in jobs}
    assert mults["cand-image-colour"] == [30.0]


@pytest.mark.parametrize("name", ["flex", "fast_flex"])
def test_flex_hands_its_workers_to_the_candidate_trainings(name, monkeypatch):
    # kills _FlexBase.__init__: `self.workers = int(workers)` -> 1 (every candidate trained in this process)
    seen = []

    def recording(js, workers=1):
        seen.append(workers)
        raise KeyboardInterrupt

    monkeypatch.setattr(flex_module, "train_candidates", recording)
    with pytest.raises(KeyboardInterrupt):
        get_method(name)(lenet(), workers="2").fit_transfer(engines([]), target=toy_domain(16),
                                                            val=toy_domain(8, seed=1))
    assert seen == [2]


def test_a_flex_model_pickled_before_picked_units_tunes_every_unit(monkeypatch):
    # kills _FlexBase.trainable_units: dropped `getattr(self, "picked_units", None) or self.net.unit_names`
    scripted_trainings(monkeypatch, FLEX_SCORES)
    method = Flex(lenet())
    method.fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))
    assert method.trainable_units() == ["conv2"]
    del method.picked_units  # as a model pickled before 2026-12, which picked all
    assert method.trainable_units() == method.net.unit_names


def test_flex_fitted_again_keeps_the_image_unit_it_picked_before(monkeypatch):
    # kills _FlexBase._adopt: `IMAGE_UNIT not in self.net.feature_names` dropped (a second image unit inserted)
    scripted_trainings(monkeypatch, {**FLEX_SCORES, "cand-image": (0.0, 9.0, 1)})  # the unit, once inserted
    method = Flex(lenet(), image_units=["colour"])
    for _ in range(2):
        method.fit_transfer(engines([]), target=toy_domain(16), val=toy_domain(8, seed=1))
        assert method.picked == "image:colour"
        assert method.net.unit_names == ["image", "conv1", "conv2", "fc1", "head"]


def test_flex_without_a_validation_set_says_so():
    # kills Flex.fit_transfer: `val is not None` dropped from the validation check (a TypeError instead)
    with pytest.raises(TransferkitError, match="flex selects on a labelled validation set; none was given"):
        Flex(lenet()).fit_transfer(engines([]), target=toy_domain(16), val=None)
