"""Session 80 leftovers (helper h_nd): --device over a config file's stage device and over a whole-section
``--set 'train={device: ...}'``, only for the stages a config or plan has; the job label in the engine's
non-finite-outputs refusal; float support labels; no host sync per matching step; bench flex / represent rows'
``diverged`` field."""
import warnings

import pytest
import torch
import yaml

from transferkit.cli import main
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError, TransferkitWarning


# ---- 1. --device over a config file's train.device / pretrain.device -------------------------------------------
@pytest.mark.parametrize("stage, given, flag", [("train", "cuda", "cpu"), ("pretrain", "cuda:1", "cuda")])
def test_device_wins_over_a_stage_device_of_the_config_file_with_a_warning(stage, given, flag, tmp_path, capsys):
    # before: train.device cuda under --device cpu was refused; pretrain.device cuda:1 under --device cuda lost
    # silently (a stage's cpu, the unset default, follows `device` anyway: no warning, test_session80_h_fix2)
    path = tmp_path / "c.yaml"
    path.write_text(f"methods: [finetune]\n{stage}: {{device: {given}, steps: 3}}\n")
    with pytest.warns(TransferkitWarning, match=rf"^--device {flag} wins over {stage}\.device={given} of config file "):
        assert main(["run", str(path), "--device", flag, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["device"] == printed["train"]["device"] == printed["pretrain"]["device"] == flag
    assert printed[stage]["steps"] == 3


def test_a_stage_device_that_copies_the_files_device_follows_the_flag_silently(tmp_path, capsys):
    path = tmp_path / "c.yaml"  # as a run's config.yaml stores it
    path.write_text("methods: [finetune]\ndevice: cuda\ntrain: {device: cuda}\npretrain: {device: cuda}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["run", str(path), "--device", "cpu", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["device"] == printed["pretrain"]["device"] == "cpu"


# ---- 2. only real stages, and the whole-section form ----------------------------------------------------------------
@pytest.mark.parametrize("argv", [["run", "demo", "--print-config"], ["bench", "flex", "--quick", "--print-plan"]])
def test_device_wins_over_a_whole_stage_section_given_to_set(argv, capsys):
    # before: --set 'train={device: cuda, ...}' kept cuda (run refused it; bench flex ran its training there)
    with pytest.warns(TransferkitWarning, match=r"--device cpu wins over --set train=\{device: cuda, steps: 5\}"):
        assert main([*argv, "--device", "cpu", "--set", "train={device: cuda, steps: 5}"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["device"] == "cpu" and printed["train"]["steps"] == 5


def test_a_device_key_of_no_stage_is_not_rewritten_nor_warned_of(capsys):
    # before: bench uda (no train stage) warned "--device cpu wins over --set train.device=cuda", then refused the key
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["bench", "uda", "--quick", "--device", "cpu", "--set", "train.device=cuda", "--print-plan"]) == 2
    err = capsys.readouterr().err
    assert "unknown bench uda plan key 'train'" in err and "wins over" not in err


# ---- 3. the job's label in the engine's non-finite refusals ------------------------------------------------------
def test_non_finite_outputs_and_weights_name_the_job_label():
    # before: both said "method 'coral'" / "method 'custom'" where the loss's refusal named the job
    import helpers
    from test_engine import make
    from test_engine_mutation import custom
    d = helpers.toy_domain()
    with pytest.raises(TransferkitError, match=r"^finetune-k=5-s0: its outputs on the validation images"):
        Engine(TrainConfig(steps=1, batch_size=16, lr=1e6, eval_every=1), label="finetune-k=5-s0").fit(
            make("coral"), source=d, unlabeled=d, val=d)

    def poisoned(method, batch):
        with torch.no_grad():
            method.net.head.weight[0, 0] = float("nan")
        return {"ce": method.supervised(batch.target).nan_to_num(0.0)}
    with pytest.raises(TransferkitError, match=r"^finetune-k=5-s0: parameters .* became NaN"):
        Engine(TrainConfig(steps=1, batch_size=8, progress=False), label="finetune-k=5-s0").fit(
            custom(poisoned), target=helpers.toy_domain(16))


# ---- 4. support labels of a non-integer dtype -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["matching_log_probs", "nearest_support_scores"])
def test_float_support_labels_are_refused_naming_the_dtype(name):
    # before: torch's "one_hot is only applicable to index tensor" / "scatter(): Expected dtype int32/int64"
    from transferkit.methods import semantic
    fn = getattr(semantic, name)
    q, s, labels = torch.randn(3, 4), torch.randn(4, 4), torch.tensor([0, 1, 2, 1])
    with pytest.raises(TransferkitError, match=rf"^{name}: support labels must be whole class ids, got a tensor of "
                                               rf"torch\.float32 with values that are not whole numbers: pass them as "
                                               rf"labels\.long\(\)"):
        fn(q, s, labels.float() + 0.5, 3)  # whole-valued floats are ids (errors.class_ids' rule: h_left)
    assert torch.equal(fn(q, s, labels.int(), 3), fn(q, s, labels, 3))  # int32 ids: as long ones (one_hot refused)


# ---- 5. no host sync per matching_ft step for the support labels' check --------------------------------------------
def test_matching_ft_steps_check_the_labels_once_per_fit_not_per_step(monkeypatch):
    # before: _check_support's aminmax(...).tolist() ran (and synced with the device) at every step
    import helpers

    from transferkit.backbones import build_backbone
    from transferkit.methods import semantic
    from transferkit.methods.semantic import FinetunedMatchingNet
    calls = []
    checked = semantic._check_support  # its aminmax(...).tolist() is the sync
    monkeypatch.setattr(semantic, "_check_support", lambda *a: calls.append(a[-1]) or checked(*a))
    torch.manual_seed(0)
    method = FinetunedMatchingNet(build_backbone("lenet", num_classes=4, in_channels=1, image_size=28))
    Engine(TrainConfig(steps=3, batch_size=16, eval_every=3, progress=False)).fit(method, target=helpers.toy_domain(32))
    assert calls == []
    method = FinetunedMatchingNet(build_backbone("lenet", num_classes=3, in_channels=1, image_size=28))
    with pytest.raises(TransferkitError, match=r"^matching_ft: the target domain 'toy' has 4 classes, more than the 3"):
        Engine(TrainConfig(steps=1, batch_size=16, progress=False)).fit(method, target=helpers.toy_domain(32))


# ---- 6. bench flex / represent rows say when their training diverged -------------------------------------------
def _diverging_engine(monkeypatch, module):
    """``module.Engine`` whose fits report a diverged training (as a thousandfold loss would)."""
    import dataclasses

    class Diverging(Engine):
        def fit(self, *a, **k):
            return dataclasses.replace(super().fit(*a, **k), diverged=True)
    monkeypatch.setattr(module, "Engine", Diverging)


def _toy_split(channels: int = 1, classes: int = 4):
    import helpers

    from transferkit.splits import Split
    parts = [helpers.toy_domain(n, seed=i, classes=classes) for i, n in enumerate((16, 8, 8))]
    return Split(*(d.to_format(channels=channels) for d in parts))


def test_flex_and_represent_rows_of_a_diverged_fit_say_so_and_the_line_names_them(monkeypatch):
    # before: neither row had "diverged", so results.md's diverged line left them out
    from transferkit.backbones import build_backbone
    from transferkit.bench import flex, represent
    from transferkit.tables import diverged_line
    cfg = TrainConfig(steps=1, batch_size=8, eval_every=1, progress=False)
    split = _toy_split(flex.CHANNELS)
    torch.manual_seed(0)
    net = build_backbone(flex.BACKBONE, num_classes=4, in_channels=flex.CHANNELS, image_size=28)
    head = {"source": "toy", "target": "toy2", "setting": "ratio=2", "seed": 0}
    assert "diverged" not in flex.run_job("ft_all", net, split, split.val, 2, 0, cfg, head)
    _diverging_engine(monkeypatch, flex)
    row = flex.run_job("ft_all", net, split, split.val, 2, 0, cfg, head)
    assert row["diverged"] is True

    from types import SimpleNamespace
    split = _toy_split()
    data = SimpleNamespace(source=split, target=split)
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    _diverging_engine(monkeypatch, represent)
    other = represent._transfer_row("erm", net, "finetune", 2, 0, split.train, data,
                                    SimpleNamespace(train=cfg), {"source": "toy", "target": "toy"})
    assert other["diverged"] is True
    line = diverged_line([row, other])
    assert len(line) == 1 and "ft_all" in line[0] and "erm/finetune" in line[0]
