"""Tests from a third mutation pass over methods/pixel (task_terms, check_task_weights, TwoStageTranslation,
cyclegan), methods/adain, methods/unit_gan, methods/multitask and methods/image_unit.

Each test kills at least one mutant that the earlier tests (test_pixel.py, test_adain.py, test_unit_gan.py,
test_multitask.py, test_finetune_methods.py, test_semantic_backbones_mutation.py, test_experiment.py,
test_pixel_multitask_mutation.py, test_pixel_unit_second_mutation.py) let through; the mutant is named in the
test's comment. Covered here: which rows go through the task network's one forward pass (only those a term
reads: with BatchNorm, unused source or target rows would change the statistics the task term is normalised
by; the first pass judged these mutants compute only, but a BatchNorm network tells them); multitask's
prepare unfreezing the shared units; image_unit freezing every unit but its own; the fix named in three
refusals (both task weights 0, a source domain of other classes, an image unit of another kind).

Judged equivalent, so not tested: cyclegan's ``isinstance(width, int)`` dropped (the generic option check
refuses a non-whole width first); adain's content loss against ``t.detach()`` (t comes from the fixed
encoder's maps and carries no gradient); adain's alpha kept without ``float()`` (0 and 1 compare and
compute alike).

Left surviving: the PixelUnit's hidden width default (32 -> 16) and the SpatialTransformer's localisation net
without its hidden layer (architecture the docstrings do not fix; both start as the identity).
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import seeded_lenet, toy_domain, uda_batch
from test_pixel_multitask_mutation import _close
from test_pixel_unit_second_mutation import _bn_net

from transferkit.errors import TransferkitError
from transferkit.methods import get_method

# --- pixel.py: task_terms ----------------------------------------------------------------------


@pytest.mark.parametrize("source_weight", [0.0, 0.5])
def test_the_task_terms_forward_pass_holds_only_the_rows_a_term_reads(source_weight):
    # kills task_terms: the target rows (or the source rows) always concatenated, whatever entmin_weight
    # (source_weight): with BatchNorm the unused rows would shift the statistics the task term is normalised by
    method = get_method("cyclegan")(_bn_net(), source_weight=source_weight)
    method.train_mode()
    batch = uda_batch(6, 4)
    x_s, y_s = batch.source
    with torch.no_grad():
        method.to_target.out.weight.normal_(std=0.05)
        g = method.to_target(x_s)
    terms = method.losses(batch)
    with torch.no_grad():
        logits = method.net(torch.cat([g, x_s] if source_weight else [g]))
        _close(terms["ce_translated"], F.cross_entropy(logits[:6], y_s))
        assert "entmin" not in terms
        if source_weight:
            _close(terms["ce_source"], 0.5 * F.cross_entropy(logits[6:], y_s))



def test_the_both_weights_zero_refusal_says_how_to_fix_it():
    # kills check_task_weights: the fix ("give one of them a weight > 0") left out of the message
    with pytest.raises(TransferkitError, match="nothing trains the task network: give one of them a weight > 0"):
        get_method("cyclegan")(seeded_lenet(), task_weight=0.0, source_weight=0.0)

# --- multitask -----------------------------------------------------------------------------------


def test_multitask_prepare_makes_every_unit_of_a_frozen_network_trainable():
    # kills Multitask.prepare: super().prepare() dropped (a network handed over frozen, e.g. by an
    # earlier method, would keep its units frozen and multitask would train the source head alone)
    net = seeded_lenet()
    method = get_method("multitask")(net, private_units=1)
    net.requires_grad_(False)
    method.prepare({"source": toy_domain(8, classes=10), "target": toy_domain(8, classes=4)})
    assert all(p.requires_grad for p in net.parameters())



def test_multitask_refuses_a_source_of_other_classes_naming_the_fix():
    # kills Multitask.prepare: the fix (the source the network was pre-trained on) left out of the message
    method = get_method("multitask")(seeded_lenet())
    with pytest.raises(TransferkitError, match="source domain 'toy' has 4 classes: give the source the network was "
                                               "pre-trained on"):
        method.prepare({"source": toy_domain(8, classes=4), "target": toy_domain(8, classes=4)})


# --- image_unit ----------------------------------------------------------------------------------


def test_image_unit_of_another_kind_refusal_names_the_kind_to_ask_for():
    # kills ImageUnit.__init__: the fix ("use kind='colour'") left out of the refusal of a kind other than the unit's
    net = seeded_lenet()
    get_method("image_unit")(net, kind="colour")
    with pytest.raises(TransferkitError, match="image_unit kind='stn' would train that one instead: use kind='colour'"):
        get_method("image_unit")(net, kind="stn")


def test_image_unit_prepare_freezes_every_unit_of_the_network_but_the_image_unit():
    # kills ImageUnit.trainable_units: another unit (the head) listed beside "image" (its parameters would
    # require grad, and get gradients, although the optimiser never moves them)
    method = get_method("image_unit")(seeded_lenet(), kind="colour")
    method.prepare({"target": toy_domain(8, classes=10)})
    assert method.trainable_units() == ["image"]
    trained = {n for n, p in method.net.named_parameters() if p.requires_grad}
    assert trained == {"units.image.conv.weight", "units.image.conv.bias"}
