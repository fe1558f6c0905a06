"""Small shared test data: a learnable toy domain, a shifted random domain, a seeded LeNet, image and npz files,
state copies and which tensors changed; engine hooks that stop a training, scripted validation
accuracies and checkpoint edits; the SKADA import the side-by-side tests skip without."""

import importlib
from pathlib import Path

import pytest
import torch

from transferkit.domain import Domain


def toy_domain(n=64, seed=0, classes=4, name="toy"):
    """``n`` 28x28 grey images; each class has a bright bar at its own height, so a network
    learns it in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for c in range(classes):
        x[y == c, :, 4 + 5 * c: 9 + 5 * c, 4:24] += 0.6
    return Domain(name, x.clamp(0, 1), y, [str(c) for c in range(classes)])


def toy_split(seed, sizes=(24, 8, 12), classes=4, names=None):
    """A Split of toy domains of ``sizes`` (train, val, test) images drawn from ``seed``,
    ``seed + 1`` and ``seed + 2``; ``names``: its classes' names instead of "0", "1", ..."""
    from transferkit.splits import Split
    parts = [toy_domain(n, seed=seed + i, classes=classes) for i, n in enumerate(sizes)]
    for d in parts if names is not None else ():
        d.class_names = list(names)
    return Split(*parts)


def one_domain_split(seed, n=12, origin=None):
    """One toy domain of ``n`` images as train, val and test (``origin``: its provenance's)."""
    from transferkit.splits import Split
    d = toy_domain(n, seed=seed)
    if origin is not None:
        d.provenance["origin"] = origin
    return Split(d, d, d)


def one_domain_data(source_seed=0, target_seed=1, unlabeled=None, **source):
    """A run's prepared data of :func:`one_domain_split` source and target (``source``: its options)."""
    from transferkit.rundata import Prepared
    return Prepared(source=one_domain_split(source_seed, **source), target=one_domain_split(target_seed),
                    channels=1, unlabeled=unlabeled)


def state_copy(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, after) -> set[str]:
    """Names of the tensors of state copy ``before`` that differ in ``after``."""
    assert set(before) <= set(after)
    return {k for k in before if not torch.equal(before[k], after[k])}


def seeded_lenet(channels: int = 1, seed: int = 0):
    """The 10-class 28x28 LeNet, initialised from ``seed``."""
    from transferkit.backbones import build_backbone
    torch.manual_seed(seed)
    return build_backbone("lenet", num_classes=10, in_channels=channels, image_size=28)


def shifted_domain(n, shift, seed, channels=1, classes=10):
    """``n`` random images brightened by ``shift`` (a domain shift) with random labels."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, channels, 28, 28, generator=g) * 0.7 + shift).clamp(0, 1)
    return Domain("d", x, torch.randint(classes, (n,), generator=g), [str(i) for i in range(classes)])


def spread_lenet():
    """:func:`seeded_lenet` with its parameters times 4: lenet at initialisation predicts near
    uniformly, so source and target entropies (and losses built on them) hardly differ."""
    net = seeded_lenet()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)
    return net


def uda_batch(n_s=8, n_t=8, progress=0.5, channels=1):
    """A domain-adaptation batch: ``n_s`` labelled source images and ``n_t`` unlabelled target
    images brightened by 0.3 (:func:`shifted_domain`)."""
    from transferkit.engine import Batch
    s, t = shifted_domain(n_s, 0.0, 1, channels=channels), shifted_domain(n_t, 0.3, 2, channels=channels)
    return Batch(step=1, progress=progress, source=(s.images, s.labels), unlabeled=t.images)


def linear_sizes(module):
    """``(in_features, out_features)`` of each ``nn.Linear`` in ``module``, in order."""
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)]


def tiny_net(classes: int, channels: int = 1):
    """A two-unit convnet cut from an ``nn.Sequential``: the fastest UnitNet for 28x28 tests."""
    import torch.nn as nn

    from transferkit.backbones import from_sequential
    seq = nn.Sequential(nn.Conv2d(channels, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 16),
                        nn.ReLU(), nn.Linear(16, classes))
    return from_sequential(seq, units=[2, 3], input_shape=(channels, 28, 28))


class Interrupt(Exception):
    """A stop raised from an engine hook, as a kill between two steps."""


def fit_result(**fields):
    """A :class:`~transferkit.engine.FitResult` of no steps (a fake fit's), with ``fields`` set."""
    from transferkit.engine import FitResult
    return FitResult(**{"steps": 0, "best_step": 0, "best_val_accuracy": None, "stopped_early": False,
                        "wall_s": 0.0, **fields})


def crash_at(at: int):
    """An engine hook that raises :class:`Interrupt` after step ``at``."""
    def crash(step, state):
        if step == at:
            raise Interrupt
    return crash


def scripted_accuracies(monkeypatch, values):
    """Validation accuracies the engine will see, in order (the real ones tie too often to
    tell restoring the best checkpoint from keeping the last weights); the i-th evaluation's
    loss is ``i``."""
    from transferkit.engine import Engine
    state = {"i": 0}

    def accuracy(self, method, x, y):
        state["i"] += 1
        return values[state["i"] - 1], (torch.full((len(y),), state["i"] % 2 == 0), float(state["i"]))
    monkeypatch.setattr(Engine, "_accuracy", accuracy)
    return state


def edit_checkpoint(ckpt_dir, edit) -> None:
    """Rewrite the engine's checkpoint in ``ckpt_dir`` with ``edit(meta)`` applied to its metadata
    (its state, history, signature), as an older or another training would have written it."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    path = Path(ckpt_dir) / "last.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["transferkit"])
    edit(meta)
    save_file(load_file(str(path)), str(path), metadata={"transferkit": json.dumps(meta)})
    (path.parent / "last.json").write_text(json.dumps(meta))


def slow_dict(seconds: float, **values) -> dict:
    """A job result that takes ``seconds`` (module level, so worker processes can run it)."""
    import time
    time.sleep(seconds)
    return values


def check_frozen_features_cached(method, frozen_unit, fit, batch, inputs):
    """A method with a fixed network runs it once per fit (``cache_inputs``), not at every
    step, and its losses from the cached rows equal those computed from the batch."""
    calls = []
    hook = frozen_unit.register_forward_hook(lambda *args: calls.append(1))
    try:
        fit()
        assert len(calls) == 1 and method.input_cache == {}
        method.train_mode()
        method.input_cache = method.cache_inputs(inputs)
        assert method.input_cache
        torch.manual_seed(0)
        cached = method.losses(batch)
        method.input_cache = {}
        torch.manual_seed(0)
        computed = method.losses(batch)
    finally:
        hook.remove()
    assert set(cached) == set(computed)
    for name in computed:
        assert torch.allclose(cached[name], computed[name], atol=1e-6), name


def slow_marked(seconds: float, marker: str) -> str:
    """Touch ``marker`` when it starts, then take ``seconds`` (a worker-process job)."""
    import time
    from pathlib import Path
    Path(marker).touch()
    time.sleep(seconds)
    return marker


def module_loaded(name: str) -> bool:
    """Whether this process has imported module ``name`` (a worker-process job)."""
    import sys
    return name in sys.modules


def killed_after(seconds: float, value):
    """Take ``seconds``, then ``value``; ``value=None``: the process kills itself instead
    (SIGKILL, as the out-of-memory killer does; a worker-process job)."""
    import os
    import signal
    import time
    time.sleep(seconds)
    if value is None:
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def skada_or_skip(module: str = "skada.deep"):
    """``module`` of SKADA, or skip: SKADA not installed, or installed without skorch (``skada.deep`` then
    raises ImportError, which ``pytest.importorskip`` does not skip before pytest 8.2)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.skip(f"{module} cannot be imported ({e}): pip install -e '.[bench]' brings SKADA and skorch")


def multitask_on_lenet(**options):
    """multitask on a 10-class seeded LeNet whose head is then given 4 target classes, as a run builds it."""
    from transferkit.fitting import retarget_head
    from transferkit.methods import get_method
    net = seeded_lenet()
    method = get_method("multitask")(net, **options)
    retarget_head(net, [str(c) for c in range(10)], ["a", "b", "c", "d"])
    return method


def multitask_batch(target_labels=(0, 1, 2, 3)):
    """A batch of 6 labelled source images (classes of 10) and 4 labelled target images (classes of 4)."""
    from transferkit.engine import Batch
    g = torch.Generator().manual_seed(3)
    x_s, x_t = torch.rand(6, 1, 28, 28, generator=g), torch.rand(4, 1, 28, 28, generator=g)
    return Batch(step=0, progress=0.0, source=(x_s, torch.tensor([0, 9, 3, 3, 7, 1])),
                 target=(x_t, torch.tensor(list(target_labels))))


def image_file(path, value=128, size=(4, 4), mode="L"):
    """A one-value image file at ``path`` (its folders made): ``value`` a grey level or an RGB tuple."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def npz_file(path, **arrays):
    """``arrays`` saved as the npz file ``path``."""
    import numpy as np
    np.savez(path, **arrays)
    return path


def toy_named_domains(monkeypatch, colour=(), n=80):
    """``rundata.prepare_domains`` on hand-made 4-class domains of ``n`` images (those named in
    ``colour`` in RGB) instead of the domains their names would load."""
    from transferkit import rundata

    def load(spec, **kw):
        d = toy_domain(n, seed=sum(map(ord, spec)), name=spec)
        return d.to_format(channels=3) if spec in colour else d
    monkeypatch.setattr(rundata, "load_domain", load)
    monkeypatch.setattr(rundata, "has_colour_shift", lambda spec: False)


def run_cli(capsys, *argv):
    """``transferkit ARGV`` run in this process: (exit code, stdout, stderr)."""
    from transferkit import cli
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def store_plan(path, plan, owner="toy", results=False):
    """``plan`` stored in the folder ``path`` as a benchmark run of ``owner``: in plan.json (without a
    ``benchmark`` key when ``owner`` is None), or, with ``results``, as an older directory's results.json."""
    import dataclasses
    import json
    path.mkdir(parents=True, exist_ok=True)
    if results:
        (path / "results.json").write_text(json.dumps({"config": {"benchmark": owner,
                                                                  "plan": dataclasses.asdict(plan)}, "rows": []}))
    else:
        (path / "plan.json").write_text(json.dumps({**({"benchmark": owner} if owner else {}),
                                                    **dataclasses.asdict(plan)}))


def linked_img_folder(tmp_path, top_name="top"):
    """A folder ``top`` whose ``img`` is a symbolic link to ``elsewhere`` (holding ``a.png``), and
    ``warned()``: how many warnings naming that link one ``remove_inside`` of ``img/a.png`` gives."""
    import warnings

    from transferkit.io import remove_inside
    top, elsewhere = tmp_path / top_name, tmp_path / "elsewhere"
    top.mkdir()
    elsewhere.mkdir()
    (elsewhere / "a.png").write_text("keep me")
    (top / "img").symlink_to(elsewhere)

    def warned() -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            remove_inside(top / "img" / "a.png", top)
        return sum("img is a symbolic link" in str(w.message) for w in caught)
    return top, elsewhere, warned
