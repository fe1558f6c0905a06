"""A practitioner's journey on their own folders (session 80, h_prac): a loaded job's ``logits`` on images of
another size than the network was trained at warns and names ``read_images(paths, size=, channels=)``, as a
wrong channel count's error does; a flex fit without ``val=`` names how to cut one from a few labels."""
import pytest
import torch
from helpers import toy_domain

from transferkit import Transfer, TransferkitWarning
from transferkit.backbones import build_backbone
from transferkit.errors import TransferkitError
from transferkit.methods import get_method
from transferkit.splits import split_domain


def _convnet4_finetune():
    return get_method("finetune")(build_backbone("convnet4", num_classes=3, in_channels=3, image_size=28)).eval()


def test_logits_at_another_size_warns_and_names_the_size_to_read_files_at():
    model = _convnet4_finetune()
    with pytest.warns(TransferkitWarning, match=r"logits: images of 16 x 16 pixels for a network built for 28 x 28 "
                                                r".*read_images\(paths, size=28, channels=3\)"):
        assert model.logits(torch.rand(2, 3, 16, 16)).shape == (2, 3)  # convnet4 pools to 1 x 1: it runs


def test_logits_at_the_trained_size_does_not_warn(recwarn):
    assert _convnet4_finetune().logits(torch.rand(2, 3, 28, 28)).shape == (2, 3)
    assert not [w for w in recwarn if issubclass(w.category, TransferkitWarning)]


def test_logits_of_other_channels_names_read_images_with_the_size_and_channels():
    with pytest.raises(TransferkitError, match=r"the channels the network was built for\), got \(2, 1, 16, 16\); "
                                               r"image files: transferkit.read_images\(paths, size=28, channels=3\)"):
        _convnet4_finetune().logits(torch.rand(2, 1, 16, 16))


def test_flex_without_val_names_how_to_cut_a_validation_split_from_few_labels(monkeypatch):
    import transferkit.api as api
    monkeypatch.setattr(api, "Engine", lambda *a, **k: pytest.fail("trained"))
    target = toy_domain(n=20, classes=4)
    with pytest.raises(TransferkitError, match=r"method flex: it selects on a labelled validation set and none is "
                                               r"given .*split_domain\(target, test_fraction=0\)"):
        Transfer("flex").fit(target=target, source=toy_domain(n=40, classes=4, seed=1))
    split = split_domain(target, test_fraction=0)  # what the message says works
    assert len(split.test) == 0 and len(split.train) + len(split.val) == len(target) and len(split.val) > 0
