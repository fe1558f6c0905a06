"""A fourth mutation pass over ``transferkit/engine.py``: behaviour the engine tests and the first three
passes (tests/test_engine_mutation.py, tests/test_engine_second_mutation.py,
tests/test_engine_third_mutation.py) let through.

Covered here: a method declaring its streams as a bare string (not a tuple) refused as such; a diverged
loss naming only its terms that are not finite; a method without convolution weights (an MLP on images)
seeing its images in the default layout, not channels-last; an unknown device refused when the config
is made, not only when a training starts; a checkpoint folder made with its parents; a checkpoint of
another seed, or of other unlabeled images, refused by name; balanced accuracy of a method right on no
image of the head's top classes. Each test fails when the code its comment names is changed that way.

Judged equivalent, so not tested: ``Stream.seed``'s ``[:12]`` of the hash (another valid seed, drawn
alike for a fixed engine seed); ``StreamInputs``' ``or 'none'`` (a fit always has a stream).
Left surviving: none of those tried. Killed by the existing tests (run against them, or a test found that
checks it), so not tested again here:
an empty streams tuple, batch_size/checkpoint_every >= 0, lr not finite, the optimizer, schedule,
momentum < 1, channel and dtype checks, cache_limit_mb > 0, the cross-epoch gather, the stream batch
rounded to the process count, the balanced sampler (k-shot shuffle, within-class draw), zero_grad dropped,
the window's mean and its resume, the lr in the records, the checkpoint at a stop and every interval, the
logged-history bound, best weights saved and loaded, the signature's checkpoint interval and select
metric, Adam's and SGD's weight decay, a parameter in two groups, content_text of ints, the layout handed
back after a refused fit, modes set again after an evaluation, requires_grad in ungrouped_modules. The
GPU and torchrun branches named in the second pass remain untested here.
"""

import json

import helpers
import pytest
import torch
from helpers import Interrupt, crash_at
from test_engine_mutation import custom
from test_engine_second_mutation import cfg

from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError

pytestmark = pytest.mark.usefixtures("one_thread")


# kills check_streams: the tuple-or-list check dropped (a string of one stream's name read letter by letter)
def test_streams_declared_as_a_bare_string_are_refused_as_not_a_tuple():
    with pytest.raises(TransferkitError, match="must declare its streams as a tuple"):
        Engine(cfg()).fit(custom(streams="target"), target=helpers.toy_domain(16))


# kills Engine._train: every term named in a diverged loss's error (not only those not finite)
def test_a_diverged_loss_names_only_its_terms_that_are_not_finite():
    def losses(method, batch):
        return {"ce": method.supervised(batch.target), "bad": torch.tensor(float("inf"))}
    with pytest.raises(TransferkitError, match=r"terms \{'bad': inf\}\); no update has run yet"):
        Engine(cfg()).fit(custom(losses), target=helpers.toy_domain(16))


# kills _train_layout: a method without 4-D weights (an MLP on images) trained on channels-last images
def test_a_method_without_convolutions_sees_its_images_in_the_default_layout():
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    seen = []

    def losses(method, batch):
        seen.append(batch.target[0].is_contiguous())
        return {"ce": method.supervised(batch.target)}
    torch.manual_seed(0)
    method = custom(losses)
    method.net = from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8), nn.ReLU(), nn.Linear(8, 4)),
                                 units=[1, 2], input_shape=(3, 8, 8))
    d = helpers.toy_domain(16).to_format(channels=3, size=8)
    Engine(cfg()).fit(method, target=d)
    assert seen == [True, True]


# kills TrainConfig.check: check_device_name dropped (an unknown device taken until a training starts)
def test_an_unknown_device_is_refused_when_the_config_is_made():
    with pytest.raises(TransferkitError, match="unknown device 'tpu'"):
        TrainConfig(device="tpu")


# kills Engine._save: the checkpoint folder made without its parents (a nested run folder not yet made)
def test_a_checkpoint_folder_is_made_with_its_parents(tmp_path):
    ckpt = tmp_path / "runs" / "a" / "stage"
    Engine(cfg(), checkpoint_dir=ckpt).fit(custom(), target=helpers.toy_domain(16))
    assert (ckpt / "last.safetensors").exists() and json.loads((ckpt / "last.json").read_text())["state"]["step"] == 2


# kills Engine._signature: the seed left out (a checkpoint of another seed's batches and draws resumed)
def test_a_checkpoint_of_another_seed_is_refused_naming_the_seeds(tmp_path):
    d = helpers.toy_domain(16)
    with pytest.raises(Interrupt):
        Engine(cfg(steps=4, checkpoint_every=1), seed=0, checkpoint_dir=tmp_path, hooks=crash_at(2)).fit(
            custom(), target=d)
    with pytest.raises(TransferkitError, match="seed: 0 there, 1 now"):
        Engine(cfg(steps=4, checkpoint_every=1), seed=1, checkpoint_dir=tmp_path).fit(custom(), target=d)


# kills Engine._signature: the unlabeled stream's images left out (a checkpoint resumed on other unlabeled images)
def test_a_checkpoint_of_other_unlabeled_images_is_refused_naming_them(tmp_path):
    d, u = helpers.toy_domain(16), helpers.toy_domain(16, seed=1)
    c = cfg(steps=4, checkpoint_every=1)
    with pytest.raises(Interrupt):
        Engine(c, checkpoint_dir=tmp_path, hooks=crash_at(2)).fit(custom(streams=("target", "unlabeled")),
                                                                   target=d, unlabeled=u)
    with pytest.raises(TransferkitError, match="unlabeled images: '16 "):
        Engine(c, checkpoint_dir=tmp_path).fit(custom(streams=("target", "unlabeled")), target=d,
                                               unlabeled=helpers.toy_domain(16, seed=2))


# kills Engine._accuracy: the correct images' per-class counts not as wide as the head (no top class right)
def test_balanced_accuracy_scores_a_method_right_on_no_image_of_its_top_classes():
    class Zeros(torch.nn.Module):  # predicts class 0 of 3 for every image
        name = "zeros"

        def forward_from_input(self, x):
            return torch.tensor([[1.0, 0.0, 0.0]]).expand(len(x), 3)
    y = torch.tensor([0, 0, 1, 2])
    acc, (correct, _) = Engine(select_metric="balanced_accuracy")._accuracy(Zeros(), torch.zeros(4, 1, 2, 2), y)
    assert acc == pytest.approx(1 / 3) and correct.tolist() == [True, True, False, False]
