"""SKADA side by side (benchmark only; ``pip install 'transferkit[bench]'``).

SKADA 0.6's deep methods (``SourceOnly``, ``DANN``, ``DAN``, ``DeepCoral``, ``MCC``) are trained on
the same data, from the same source-pretrained LeNet (a copy of transferkit's network: the
very same ``UnitNet`` is SKADA's module, the feature layer is its last feature unit), with
the same batch size (``batch_size`` source + ``batch_size`` target per step), optimiser
(Adam, same learning rate) and number of epochs as transferkit's adaptation. An epoch is
SKADA's: ``max(n_source, n_target) // batch_size`` steps. SKADA is imported lazily here and
nowhere in the library.

``DANN-sigmoid`` is SKADA's ``DANN`` with one change, ours: SKADA 0.6's default
``DomainClassifier`` ends in ``Softmax`` over its single output, so it outputs 1 for every
sample and the domain loss sends no gradient (:func:`dead_domain_classifier` checks it);
``DANN-sigmoid`` replaces that ``Softmax`` with a ``Sigmoid`` (what ``BCELoss`` expects).
``MCC-T2.5`` is SKADA's ``MCC`` at temperature T = 2.5 (the MCC paper's and transferkit's
``mcc`` default; SKADA's default is T = 1). Every other method runs SKADA's defaults.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ..evaluate import fraction_correct
from ..runtime import package_version

SKADA_METHODS = ("SourceOnly", "DANN", "DANN-sigmoid", "DAN", "DeepCoral", "MCC", "MCC-T2.5")


def available() -> bool:
    try:
        import skada.deep  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str | None:
    """The installed SKADA's version (None when it is not installed)."""
    return package_version("skada")


def steps_per_epoch(n_source: int, n_target: int, batch_size: int) -> int:
    """SKADA's DomainBalancedSampler: ``max(n_s, n_t)`` rounded down to whole batches."""
    return max(n_source - n_source % batch_size, n_target - n_target % batch_size) // batch_size


class SkadaModule(torch.nn.Module):
    """The UnitNet as SKADA calls its module: ``module(x, sample_weight=...)``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, sample_weight=None):
        return self.net(x)


def skada_estimator(name: str, net, epochs: int, batch_size: int, lr: float):
    import skada.deep as sd

    layer = f"net.units.{net.feature_names[-1]}"
    module = SkadaModule(net)
    kw = dict(batch_size=batch_size, max_epochs=epochs, optimizer=torch.optim.Adam, lr=lr, train_split=None,
              verbose=0, device="cpu")
    if name == "SourceOnly":
        return sd.SourceOnly(module, **kw)
    if name == "DANN":
        return sd.DANN(module, layer, reg=1, num_features=module.net.embed_dim, **kw)
    if name == "DANN-sigmoid":
        return sd.DANN(module, layer, reg=1, domain_classifier=sigmoid_domain_classifier(module.net.embed_dim), **kw)
    if name == "DAN":
        return sd.DAN(module, layer, reg=1, **kw)
    if name == "DeepCoral":
        return sd.DeepCoral(module, layer, reg=1, **kw)
    if name == "MCC":
        return sd.MCC(module, layer, reg=1, **kw)
    if name == "MCC-T2.5":
        return sd.MCC(module, layer, reg=1, T=2.5, **kw)
    raise ValueError(f"unknown SKADA method {name!r}; known: {SKADA_METHODS}")


def sigmoid_domain_classifier(num_features: int):
    """SKADA's ``DomainClassifier`` (DANN paper: Linear-100, BatchNorm, ReLU, Linear-1, with
    its gradient reversal layer) with the final ``Softmax`` replaced by a ``Sigmoid``."""
    from skada.deep.modules import DomainClassifier

    d = DomainClassifier(num_features=num_features)
    d.classifier[-1] = torch.nn.Sigmoid()
    return d


def dead_domain_classifier(num_features: int = 16, n: int = 8) -> bool:
    """True when SKADA's default ``DomainClassifier`` gives the constant output 1 and no
    gradient to its input (the case in skada 0.6.0)."""
    import warnings

    from skada.deep.modules import DomainClassifier

    torch.manual_seed(0)
    x = torch.randn(n, num_features, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = DomainClassifier(num_features=num_features)(x)
    out.log().sum().backward()
    return bool(torch.all(out == 1)) and float(x.grad.abs().max()) == 0.0


def run_skada(name: str, pretrained, source, target_train, target_test, epochs: int, batch_size: int,
              lr: float, seed: int, channels_last: bool = False) -> dict:
    """Adapt a copy of ``pretrained`` with SKADA method ``name``; return accuracy on
    ``target_test`` and the wall seconds of ``fit``. ``channels_last``: hand SKADA the
    module in the channels-last layout that transferkit's engine trains in on CPU (SKADA,
    like skorch, keeps the layout it is given; the benchmark gives the default one)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    net = copy.deepcopy(pretrained).train()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    est = skada_estimator(name, net, epochs, batch_size, lr)
    x = torch.cat([source.images, target_train.images]).numpy()
    y = np.concatenate([source.labels.numpy(), -np.ones(len(target_train), dtype=np.int64)])
    domain = np.concatenate([np.ones(len(source), dtype=np.int64), -2 * np.ones(len(target_train), dtype=np.int64)])
    t0 = time.perf_counter()
    est.fit(x, y, sample_domain=domain)
    wall = time.perf_counter() - t0
    x_test = target_test.images.numpy()
    pred = est.predict(x_test, sample_domain=-2 * np.ones(len(x_test), dtype=np.int64))
    acc = fraction_correct(torch.as_tensor(pred), target_test.labels)
    return {"accuracy": acc, "wall_s": wall}


def dann_timing(source: str = "mnist", target: str = "digits", epochs: int = 2, repeats: int = 3,
                batch_size: int = 64, lr: float = 1e-3, pretrain_steps: int = 300) -> dict:
    """Wall seconds of training transferkit's ``dann`` and SKADA's ``DANN`` for the same
    epochs from the same source network, alternating them ``repeats`` times (so that a
    shared machine's load hits both alike); returns every time and the medians. A third
    entry times ``dann`` with the DANN paper's 100-unit discriminator (``hidden=100,
    depth=1``, about SKADA's size) instead of the default 500-500 one, and a fourth SKADA's
    ``DANN`` given the module in the channels-last layout our engine trains in on CPU."""
    import statistics

    from ..config import ExperimentConfig
    from ..engine import Engine, TrainConfig
    from ..methods import get_method
    from ..rundata import prepare_domains
    from ..source import pretrain_source

    cfg = ExperimentConfig(source=source, target=target, k=None, backbone="lenet", select_on="none",
                           pretrain=TrainConfig(steps=pretrain_steps, batch_size=batch_size, lr=lr, eval_every=100))
    data = prepare_domains(cfg)
    net, _ = pretrain_source(cfg, data, log=lambda *a: None)
    steps = epochs * steps_per_epoch(len(data.source.train), len(data.target.train), batch_size)
    variants = {"transferkit dann": {}, "transferkit dann, 100-unit discriminator": {"hidden": 100, "depth": 1}}
    skada = {"skada DANN": False, "skada DANN, channels-last module": True}
    times = {k: [] for k in [*variants, *skada]}
    for r in range(repeats):
        for key, options in variants.items():
            torch.manual_seed(r)  # the discriminator's initial weights
            method = get_method("dann")(copy.deepcopy(net), **options)
            engine = Engine(TrainConfig(steps=steps, batch_size=batch_size, lr=lr, eval_every=steps, patience=None,
                                        progress=False), seed=r)
            times[key].append(method.fit_transfer(lambda tag, config=None, e=engine: e, source=data.source.train,
                                                  unlabeled=data.target.train).wall_s)
        for key, channels_last in skada.items():
            times[key].append(run_skada("DANN", net, data.source.train, data.target.train, data.target.test,
                                        epochs, batch_size, lr, r, channels_last=channels_last)["wall_s"])
    return {"steps": steps, "epochs": epochs, "times": times,
            "median": {k: statistics.median(v) for k, v in times.items()}}
