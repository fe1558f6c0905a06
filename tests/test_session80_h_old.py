"""Session 80 (h_old): older open items. An absurd learning rate or weight decay is refused up front (not a raw
float32 overflow inside the optimiser), and a group's lr x lr_mult that overflows names the learning rate. A
metrics file may be a character device or the process's own stdout/stderr (links to regular files
and directories stay refused). ft_ss and image_unit jobs, which write no network file, are named as such by
load_job_network with what reads them instead. The text-embedding cache is bounded in bytes (cache_mb)."""


import helpers
import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.io import append_jsonl
from transferkit.methods import get_method


def _fit(method="finetune", train=None, **options):
    torch.manual_seed(0)
    net = build_backbone("lenet", num_classes=4, in_channels=1)
    d = helpers.toy_domain(16)
    cfg = TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False, **(train or {}))
    return Engine(cfg).fit(get_method(method)(net, **options), target=d, val=d)


@pytest.mark.parametrize("field, value", [("lr", 1e38), ("lr", 1e300), ("weight_decay", 1e300)])
def test_an_absurd_learning_rate_or_weight_decay_is_refused_up_front(field, value):
    with pytest.raises(TransferkitError, match=f"{field} must be at most 2\\*\\*64"):
        TrainConfig(**{field: value})
    cfg = TrainConfig()
    setattr(cfg, field, value)  # changed in place: refused when the training starts, before any step
    with pytest.raises(TransferkitError, match=f"{field} must be at most 2\\*\\*64"):
        cfg.check()
    TrainConfig(**{field: 2.0 ** 64})  # the bound itself is taken


def test_a_group_learning_rate_past_float32_is_named_not_a_raw_overflow():
    with pytest.raises(TransferkitError, match=r"step at step 0 overflowed float32 .*lr 1e\+19 x its multiplier.*"
                                               r"lower the learning rate, or .*backbone_lr_mult=1e\+30"):
        _fit("ft_slow", train={"lr": 1e19}, backbone_lr_mult=1e30)


def test_metrics_lines_go_to_a_character_device_or_the_process_s_own_stream(capfd):
    engine = Engine(TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False), metrics_path="/dev/null")
    engine.fit(get_method("finetune")(build_backbone("lenet", num_classes=4, in_channels=1)),
                    target=helpers.toy_domain(16))
    append_jsonl("/dev/stdout", {"step": 1, "loss": 0.5})  # a link to what pytest made fd 1: a regular file
    assert capfd.readouterr().out == '{"step": 1, "loss": 0.5}\n'


def test_a_link_to_a_regular_file_or_a_directory_is_still_refused_and_the_error_names_the_devices(tmp_path):
    (tmp_path / "real.jsonl").write_text("")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "real.jsonl")
    for path in (tmp_path / "link.jsonl", tmp_path):
        with pytest.raises(TransferkitError, match=r"not follow or write.*character device or the process's own "
                                                   r"output stream \(/dev/null, /dev/stdout, /dev/stderr\)"):
            append_jsonl(path, {"step": 1})
    assert (tmp_path / "real.jsonl").read_text() == ""


@pytest.fixture(scope="module")
def added_run(tmp_path_factory):
    from transferkit.config import ExperimentConfig
    from transferkit.experiment import run_experiment
    out = tmp_path_factory.mktemp("h_old_runs")
    cfg = ExperimentConfig(name="ss", source="digits", target="digits", source_classes="0-4", target_classes="0-4",
                           methods=["ft_ss", "image_unit"], options={"image_unit": {"kind": "colour"}}, k=2,
                           repeats=1, select_on="none", out_dir=str(out), pretrain=TrainConfig(steps=2, eval_every=2),
                           train=TrainConfig(steps=1, eval_every=1))
    run_experiment(cfg, run_dir=out / "ss", log=lambda *a: None)
    return out / "ss"


@pytest.mark.parametrize("method, added", [("ft_ss", "a scale-and-shift module"), ("image_unit", "an image unit")])
def test_a_method_that_adds_to_its_network_is_named_with_what_reads_its_jobs(added_run, method, added):
    from transferkit.experiment import load_job_network, load_model
    assert not list((added_run / "models").glob("*.safetensors"))  # the file format cannot describe them
    with pytest.raises(TransferkitError, match=rf"{method} writes no network file, as it adds {added}.*"
                                               rf"load_model\(run_dir, '{method}', seed=0\)\.net"):
        load_job_network(added_run, method)
    net = load_job_network(added_run, method, trust_pickles=True)
    assert torch.equal(net.state_dict()["head.weight"], load_model(added_run, method).net.state_dict()["head.weight"])


def test_the_text_cache_is_bounded_in_bytes_and_holds_no_batch_behind_a_row(monkeypatch):
    from transferkit.text import HashingEncoder
    long, short, fresh = HashingEncoder(64), HashingEncoder(16), HashingEncoder(64)
    for enc in (long, short):
        monkeypatch.setattr(enc, "cache_mb", 4 * 16 * 4 / 2**20)  # 4 rows of 16 float32, 1 of 64
    texts = [f"text {i}" for i in range(6)]
    rows = long.encode(texts)
    short.encode(texts)
    assert list(long._cache) == ["text 5"] and list(short._cache) == texts[2:]
    assert all(r.untyped_storage().nbytes() == r.nbytes for r in short._cache.values())  # copies, not batch views
    assert long._bytes == 64 * 4 and short._bytes == 4 * 16 * 4
    assert torch.equal(long.encode(texts), rows) and torch.equal(rows, fresh.encode(texts))
