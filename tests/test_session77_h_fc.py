"""Session 77 (h_fc): leftovers of the extension journey (plugin methods, backbones and data)."""

import hashlib
import importlib.util
import json
import re
import sys

import torch
from torch import nn

from transferkit.backbones import build_backbone, definition_digest, from_sequential

CELL = '''
class Act(nn.Module):
    def forward(self, x):
        return BODY
'''


def _cell_net(body):
    space = {"__name__": "h_fc_cell", "nn": nn, "torch": torch}  # as a notebook cell: no source file
    exec(CELL.replace("BODY", body), space)
    torch.manual_seed(0)
    return from_sequential(nn.Sequential(nn.Conv2d(1, 4, 3), space["Act"](), nn.Flatten(), nn.Linear(144, 3)),
                           input_shape=(1, 8, 8), verify=False)


def test_definition_digest_counts_a_changed_forward_without_source():
    a, b = _cell_net("torch.relu(x)"), _cell_net("torch.tanh(x) * 0")
    assert repr(a) == repr(b)
    assert definition_digest(a) != definition_digest(b)
    assert definition_digest(a) == definition_digest(_cell_net("torch.relu(x)"))


def _builder_module(tmp_path, monkeypatch, sub, scale):
    path = tmp_path / sub / "h_fc_plug.py"
    path.parent.mkdir()
    path.write_text("from torch import nn\nfrom transferkit.backbones import from_sequential\n\n"
                    f"SCALE = {scale}\n\n\ndef build(num_classes, in_channels=1, image_size=8):\n"
                    "    return from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, "
                    "num_classes)), input_shape=(in_channels, image_size, image_size))\n")
    spec = importlib.util.spec_from_file_location("h_fc_plug", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "h_fc_plug", module)  # imported, as a plugin is
    spec.loader.exec_module(module)
    return module.build


def test_definition_digest_counts_the_builders_source(tmp_path, monkeypatch):
    one = _builder_module(tmp_path, monkeypatch, "a", 1)
    net = one(3)
    before = definition_digest(net, one)
    two = _builder_module(tmp_path, monkeypatch, "b", 2)  # the plugin file edited, then imported again
    assert definition_digest(two(3), two) != before


def test_built_in_digest_is_the_one_before():
    net = build_backbone("lenet", num_classes=3)
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(net))
    shapes = [(n, list(t.shape)) for n, t in [*net.named_parameters(), *net.named_buffers()]]
    assert definition_digest(net) == hashlib.sha256(json.dumps([text, shapes]).encode()).hexdigest()[:16]


def _net():
    """A channel-preserving first unit (1 -> 1 channel, stride 2): net(its activations) runs."""
    torch.manual_seed(0)
    return from_sequential(nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1),
                                         nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1)),
                                         nn.Flatten(), nn.Linear(4, 4)), units=[1, 2], input_shape=(1, 28, 28))


def _head_only(calls):
    import torch.nn.functional as F

    from transferkit.methods.base import Method

    class HeadOnly(Method):
        name = "h_fc_head_only"
        streams = ("target",)

        def trainable_units(self):
            return self.net.unit_names[-2:]

        def losses(self, batch):
            x, y = batch.target
            return {"ce": F.cross_entropy(calls(self, x), y)}
    return HeadOnly


def test_net_on_cached_activations_is_refused_when_the_first_unit_takes_them():
    import pytest
    from helpers import toy_domain

    from transferkit.engine import Engine, TrainConfig
    from transferkit.errors import TransferkitError

    net = _net()
    net(torch.zeros(2, 1, 14, 14))  # the network takes the first unit's output: nothing else would fail
    with pytest.raises(TransferkitError, match=r"shape \(8, 1, 14, 14\).*cached activations.*forward_from_input"):
        Engine(TrainConfig(steps=2, batch_size=8)).fit(_head_only(lambda m, x: m.net(x))(net), target=toy_domain(16))
    assert net.activation_shapes == frozenset()  # left as it was after the training
    Engine(TrainConfig(steps=2, batch_size=8)).fit(_head_only(lambda m, x: m.forward_from_input(x))(_net()),
                                                   target=toy_domain(16))
    net(torch.zeros(2, 1, 28, 28))


SCRIPT = '''
def top_net(num_classes, in_channels=1, image_size=28):
    pass


def guarded_net(num_classes, in_channels=1, image_size=28):
    pass


def make_domain():
    pass


BACKBONES["top_net"] = top_net

if __name__ == "__main__":
    BACKBONES["guarded_net"] = guarded_net
    register_domain("h_fc_dom", make_domain)
'''


def _main_script(tmp_path, monkeypatch):
    import types
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    space = {"__name__": "__main__"}
    exec(compile(SCRIPT.split("BACKBONES")[0], str(script), "exec"), space)  # the defs, as the script ran them
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))
    return space


def test_workers_refuse_a_backbone_or_domain_registered_only_in_the_main_block(tmp_path, monkeypatch):
    import dataclasses

    import pytest

    from transferkit import data
    from transferkit.backbones import BACKBONES
    from transferkit.errors import TransferkitError
    from transferkit.preflight import check_workers_reach, main_only

    space = _main_script(tmp_path, monkeypatch)
    assert not main_only(space["top_net"], "top_net")
    assert main_only(space["guarded_net"], "guarded_net")
    monkeypatch.setitem(BACKBONES, "top_net", space["top_net"])
    monkeypatch.setitem(BACKBONES, "guarded_net", space["guarded_net"])
    record = dataclasses.replace(data.BUILTINS["digits"], name="h_fc_dom", build=space["make_domain"])
    monkeypatch.setitem(data.BUILTINS, "h_fc_dom", record)
    check_workers_reach([], 2, "top_net", ["digits", "digits+blur"])
    with pytest.raises(TransferkitError, match=r"backbone 'guarded_net' is not defined and registered at the top"):
        check_workers_reach([], 2, "guarded_net", ["digits"])
    with pytest.raises(TransferkitError, match=r"domain 'h_fc_dom' is not .*TRANSFERKIT_PLUGINS"):
        check_workers_reach([], 2, "top_net", ["digits", "h_fc_dom+blur"])
    check_workers_reach([], 1, "guarded_net", ["h_fc_dom"])  # one process runs the jobs


def test_main_only_message_says_what_is_checked(tmp_path, monkeypatch):
    import pytest

    from transferkit.errors import TransferkitError
    from transferkit.methods.base import Method
    from transferkit.preflight import check_workers_reach

    _main_script(tmp_path, monkeypatch)
    made = type("Made", (Method,), {"name": "h_fc_made", "__module__": "__main__"})
    made.__qualname__ = "factory.<locals>.Made"
    with pytest.raises(TransferkitError) as e:
        check_workers_reach([made], 2)
    assert "top level of this script" in str(e.value) and "made in a function" in str(e.value)
    assert "registered only in this script's __main__" not in str(e.value)


def _no_image_size(num_classes, in_channels=1):
    return from_sequential(nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                         nn.Flatten(), nn.Linear(8, num_classes)))


def _fc_for_28(num_classes, in_channels=1, image_size=28):  # sized for 28 px whatever it is given, no input_shape
    return from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, 16), nn.ReLU(),
                                         nn.Linear(16, num_classes)))


def test_a_builder_without_image_size_is_refused_naming_the_signature(monkeypatch):
    import pytest

    from transferkit.backbones import BACKBONES
    from transferkit.errors import TransferkitError

    monkeypatch.setitem(BACKBONES, "h_fc_no_size", _no_image_size)
    with pytest.raises(TransferkitError, match=r"backbone builder 'h_fc_no_size' has the signature \(num_classes, "
                                               r"in_channels=1\).*\(num_classes, in_channels=1, image_size=28"):
        build_backbone("h_fc_no_size", num_classes=3)


def test_a_builder_without_input_shape_is_run_on_the_image_size_it_is_given(monkeypatch):
    import pytest

    from transferkit.backbones import BACKBONES
    from transferkit.errors import TransferkitError

    monkeypatch.setitem(BACKBONES, "h_fc_fc28", _fc_for_28)
    assert build_backbone("h_fc_fc28", num_classes=3, image_size=28)(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(TransferkitError, match=r"backbone builder 'h_fc_fc28' .*fails on the images it is built for "
                                               r".*\(1, 32, 32\).*image_size=32"):
        build_backbone("h_fc_fc28", num_classes=3, image_size=32)


def test_numbered_target_classes_against_named_source_classes_name_the_cause():
    import pytest

    from transferkit.errors import TransferkitError
    from transferkit.fitting import source_head_rows
    from transferkit.methods import get_method

    dann = get_method("dann")
    with pytest.raises(TransferkitError, match=r"target's classes are numbers.*source's are names.*class_names"):
        source_head_rows(dann, ["cat", "dog"], 2, ["0", "1"])
    with pytest.raises(TransferkitError, match=r"absent from the source") as e:  # named classes the source lacks
        source_head_rows(dann, ["cat", "dog"], 2, ["cat", "cow"])
    assert "numbers" not in str(e.value)


def test_the_adaptation_method_example_of_the_architecture_doc_trains():
    from helpers import tiny_net, toy_domain
    from test_docs_examples import block, run_block

    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods import get_method
    from transferkit.methods.base import METHODS

    run_block(block("docs/architecture.md", "class MeanMatch(AdaptationMethod)"))  # verbatim: it registers
    try:
        method = get_method("mean_match")(tiny_net(4), weight=0.5, entmin_weight=0.1)
    finally:
        del METHODS["mean_match"]
    fit = Engine(TrainConfig(steps=2, batch_size=8)).fit(method, source=toy_domain(16),
                                                         unlabeled=toy_domain(16, seed=1))
    batch = type("Batch", (), {"source": (toy_domain(8).images, toy_domain(8).labels),
                               "unlabeled": toy_domain(8, seed=1).images})()
    assert fit.steps == 2 and set(method.losses(batch)) == {"ce_source", "entmin", "mean_match"}


def test_episodes_name_the_queries_that_fit_the_smaller_k_when_no_number_fits_every_k():
    import pytest

    from transferkit.domain import Domain
    from transferkit.errors import TransferkitError
    from transferkit.fewshot_eval import _check_episodes_fit

    labels = torch.arange(3).repeat_interleave(6)  # 6 images per class
    test = Domain("t", torch.zeros(len(labels), 1, 4, 4), labels, ["a", "b", "c"])
    with pytest.raises(TransferkitError, match=r"--n-query 5 fits it for 1-shot, not for 6-shot.*--k-shot"):
        _check_episodes_fit(test, 3, [1, 6], 15)  # 1-shot with 15 queries is what fails first
    _check_episodes_fit(test, 3, [1], 5)  # what it offers fits


def test_one_unreadable_image_file_says_to_repair_or_remove_it(tmp_path):
    import pytest
    from helpers import image_file

    from transferkit.data import load_domain
    from transferkit.errors import TransferkitError

    for c in ("a", "b"):
        for i in range(2):
            image_file(tmp_path / c / f"{i}.png")
    (tmp_path / "b" / "1.png").write_bytes(b"not a png")
    with pytest.raises(TransferkitError, match=r"cannot read image file .*1\.png.*\(repair or remove it\)"):
        load_domain(f"folder:{tmp_path}")


def test_npz_labels_of_strings_say_how_to_convert_them(tmp_path):
    import numpy as np
    import pytest
    from helpers import npz_file

    from transferkit.data import load_domain
    from transferkit.errors import TransferkitError

    path = tmp_path / "d.npz"
    npz_file(path, x=np.full((4, 8, 8), 128, np.uint8), y=np.array(["cat", "dog", "cat", "dog"]))
    with pytest.raises(TransferkitError, match=r"np\.unique\(y, return_inverse=True\).*class_names=names"):
        load_domain(f"npz:{path}")


def test_unit_output_shapes_without_input_shape_names_the_remedy():
    import pytest

    from transferkit.errors import TransferkitError

    net = from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)))
    with pytest.raises(TransferkitError, match=r"needs input_shape=\(C, H, W\).*from_modules\(\.\.\., input_shape="):
        net.unit_output_shapes()
    net.input_shape = (1, 4, 4)  # the remedy it names
    assert net.unit_output_shapes()["head"] == (3,)
