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
