"""unit_gan (seed 003's UNIT as pixel-level adaptation): its losses on known values and against
the paper's objective by hand, the shared latent space, which players each term trains, the
two stages, refusals, and a run of the CLI."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import changed, seeded_lenet, state_copy, toy_domain

from transferkit.engine import Batch, Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.methods import get_method
from transferkit.methods.unit_gan import gan_loss, gaussian_kl

PLAYERS = ("net", "translator", "disc_source", "disc_target")


def _batch(channels=1):
    g = torch.Generator().manual_seed(3)
    return Batch(step=0, progress=0.0, source=(torch.rand(6, channels, 28, 28, generator=g), torch.arange(6)),
                 unlabeled=torch.rand(4, channels, 28, 28, generator=g))


def _reached(method, term):
    method.zero_grad(set_to_none=True)
    method.losses(_batch())[term].backward()
    return {n for n in PLAYERS if any(p.grad is not None and p.grad.abs().sum() > 0
                                      for p in getattr(method, n).parameters())}


def test_kl_and_gan_terms_on_known_values():
    assert gaussian_kl(torch.tensor([[1.0, 2.0], [0.0, -1.0]])).item() == pytest.approx((1 + 4 + 0 + 1) / 4)
    zero = torch.zeros(3, 1, 7, 7)
    assert gan_loss(zero, True).item() == pytest.approx(math.log(2)) == gan_loss(zero, False).item()
    sure = torch.full((2, 1, 7, 7), 5.0)  # D says "real" with probability σ(5)
    assert gan_loss(sure, True).item() == pytest.approx(-math.log(torch.sigmoid(torch.tensor(5.0)).item()), rel=1e-5)
    assert gan_loss(sure, False).item() == pytest.approx(-math.log(1 - torch.sigmoid(torch.tensor(5.0)).item()),
                                                         rel=1e-5)


def test_the_latent_space_is_shared_and_translations_go_the_asked_way():
    method = get_method("unit_gan")(seeded_lenet(channels=3), width=8)
    tr = method.translator
    x = torch.rand(5, 3, 28, 28)
    mu = tr.encode(x, "source")
    assert mu.shape == (5, 16, 14, 14) and tr.encode(x, "target").shape == mu.shape  # one latent space, 2·width
    out = tr.decode(mu, "target")
    assert out.shape == (5, 3, 28, 28) and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(method.translate(x), tr.decode(tr.encode(x, "source"), "target"))
    torch.testing.assert_close(method.translate(x, to="source"), tr.decode(tr.encode(x, "target"), "source"))
    # the target's reconstruction reaches the target encoder and generator and the shared layers only
    F.l1_loss(tr.decode(tr.encode(x, "target"), "target"), x).backward()
    reached = {".".join(part for part in n.split(".")[:2] if not part.isdigit() and part not in ("weight", "bias"))
               for n, p in tr.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached == {"encoders.target", "shared_encoder", "shared_generator", "generators.target"}
    with pytest.raises(TransferkitError, match=r"translate\(to=...\) must be one of \('source', 'target'\), "
                                               r"got 'mnist'"):
        method.translate(x, to="mnist")


def test_stage_one_terms_are_the_paper_s_objective_with_its_weights():
    method = get_method("unit_gan")(seeded_lenet(), gan_weight=2.0, kl_weight=0.3, recon_weight=5.0,
                                    cycle_kl_weight=0.7, cycle_weight=11.0, width=8)
    method.stage = 1
    method.prepare({})
    method.train_mode()
    batch = _batch()
    (x_s, _), x_t = batch.source, batch.unlabeled
    torch.manual_seed(7)
    terms = {k: v.detach() for k, v in method.losses(batch).items()}
    assert set(terms) == {"disc", "gan", "vae", "cycle"}
    tr, d_s, d_t = method.translator, method.disc_source, method.disc_target

    def bce(logits, label):  # −log σ(l) or −log(1 − σ(l)), by hand
        p = torch.sigmoid(logits)
        return -(p.log() if label else (1 - p).log()).mean()
    with torch.no_grad():
        torch.manual_seed(7)  # the same noise, drawn in the same order: z_s, z_t, then z' of each cycle
        mu_s, mu_t = tr.encode(x_s, "source"), tr.encode(x_t, "target")
        z_s, z_t = mu_s + torch.randn_like(mu_s), mu_t + torch.randn_like(mu_t)
        fake_t, fake_s = tr.decode(z_s, "target"), tr.decode(z_t, "source")
        mu_st, mu_ts = tr.encode(fake_t, "target"), tr.encode(fake_s, "source")
        z_st, z_ts = mu_st + torch.randn_like(mu_st), mu_ts + torch.randn_like(mu_ts)

        def kl(m):
            return (m ** 2).mean()

        def l1(a, b):
            return (a - b).abs().mean()
        disc = 2.0 * (bce(d_t(x_t), 1) + bce(d_t(fake_t), 0) + bce(d_s(x_s), 1) + bce(d_s(fake_s), 0))
        gan = 2.0 * (bce(d_t(fake_t), 1) + bce(d_s(fake_s), 1))
        vae = 0.3 * (kl(mu_s) + kl(mu_t)) + 5.0 * (l1(tr.decode(z_s, "source"), x_s)
                                                   + l1(tr.decode(z_t, "target"), x_t))
        cycle = 0.7 * (kl(mu_s) + kl(mu_t) + kl(mu_st) + kl(mu_ts)) + 11.0 * (l1(tr.decode(z_st, "source"), x_s)
                                                                             + l1(tr.decode(z_ts, "target"), x_t))
    for name, value in {"disc": disc, "gan": gan, "vae": vae, "cycle": cycle}.items():
        torch.testing.assert_close(terms[name], value, atol=1e-5, rtol=1e-5, msg=name)


def test_each_stage_trains_only_its_own_players():
    method = get_method("unit_gan")(seeded_lenet(), width=8, source_weight=0.5, entmin_weight=0.1)
    method.stage = 1
    method.prepare({})
    method.train_mode()
    assert _reached(method, "disc") == {"disc_source", "disc_target"}  # detached translations
    assert _reached(method, "gan") == {"translator"}  # frozen discriminators
    assert _reached(method, "vae") == {"translator"} and _reached(method, "cycle") == {"translator"}
    groups = method.param_groups()
    assert len(groups) == 1 and groups[0]["lr_mult"] == 0.1 and groups[0]["beta1"] == 0.5  # the paper's Adam
    assert {id(p) for p in groups[0]["params"]} == {id(p) for n in PLAYERS[1:] for p in getattr(method, n).parameters()}
    method.stage = 2
    method.prepare({})
    method.train_mode()
    assert set(method.losses(_batch())) == {"ce_translated", "ce_source", "entmin"}
    assert _reached(method, "ce_translated") == {"net"}  # the translator is fixed in stage 2
    assert not any(p.requires_grad for n in PLAYERS[1:] for p in getattr(method, n).parameters())


def test_fit_trains_the_translator_then_the_task_network_on_translations_computed_once():
    src = toy_domain(16, classes=10, name="src")
    tgt = toy_domain(16, seed=1, classes=10, name="tgt")

    def fit():
        torch.manual_seed(0)
        method = get_method("unit_gan")(seeded_lenet(), width=8, translator_steps=3)
        before = {n: state_copy(getattr(method, n)) for n in PLAYERS}
        cfg = TrainConfig(steps=2, eval_every=2, batch_size=8)
        seen = []

        def make_engine(tag):
            seen.append((tag, method.stage, {n for n in PLAYERS if changed(before[n], state_copy(getattr(method, n)))}))
            return Engine(cfg, seed=0)
        result = method.fit_transfer(make_engine, source=src, unlabeled=tgt, val=src)
        return method, before, seen, result
    method, before, seen, result = fit()
    # stage 1 moved the translator and the discriminators, not the task network
    assert seen == [("translator", 1, set()), ("main", 2, {"translator", "disc_source", "disc_target"})]
    assert result.steps == 5 and method.extra_results()["fit_wall_s"] > 0
    assert changed(before["net"], state_copy(method.net))
    translated = method.translate(src.images)
    batch = Batch(step=0, progress=0.0, source=(src.images[:4], src.labels[:4]), unlabeled=tgt.images[:4],
                  indices={"source": torch.tensor([3, 0, 7, 9])})
    method.input_cache = method.cache_inputs({"source": src.images})  # what the engine keeps during stage 2
    torch.testing.assert_close(method.translated(batch), translated[[3, 0, 7, 9]])
    again = fit()[0]
    assert not changed(state_copy(method), state_copy(again))  # deterministic for a fixed seed


def test_refusals_are_named():
    net = seeded_lenet()
    with pytest.raises(TransferkitError, match="task_weight and source_weight are both 0"):
        get_method("unit_gan")(net, task_weight=0.0)
    with pytest.raises(TransferkitError, match="width and disc_width must be whole numbers >= 1, got 0 and 32"):
        get_method("unit_gan")(net, width=0)
    with pytest.raises(TransferkitError, match=r"translator_steps must be a whole number >= 1 \(or null"):
        get_method("unit_gan")(net, translator_steps=0)
    with pytest.raises(TransferkitError, match=r"beta1 .* must be a number in \[0, 1\), got 1.5"):
        get_method("unit_gan")(net, beta1=1.5)
    with pytest.raises(TransferkitError, match="cycle_weight"):
        get_method("unit_gan")(net, cycle_weight=-1.0)


def test_the_cli_runs_unit_gan_without_target_labels(tmp_path):
    from transferkit.cli import main
    rc = main(["run", "--set", "source=mnist", "--set", "target=mnistm", "--set", "backbone=lenet",
               "--set", "methods=[unit_gan]", "--set", "k=null", "--set", "repeats=1", "--set", "select_on=none",
               "--set", "pretrain.steps=10", "--set", "train.steps=3", "--set", "train.batch_size=16",
               "--set", "options.unit_gan.translator_steps=2", "--set", "options.unit_gan.width=4",
               "--set", f"out_dir={tmp_path}"])
    assert rc == 0
    row = json.loads(next(tmp_path.rglob("results.json")).read_text())["rows"][0]
    assert row["method"] == "unit_gan" and row["n_labeled"] == 0 and row["steps"] == 5
    assert 0 <= row["accuracy"] <= 1
