"""Session 78 (h_fg): a run's pickled models are not unpickled unasked (episodes, the UDA bench's t-SNE), a
network file's prototype_head metadata is checked, a cache others may write is named."""

import pathlib
import shutil

import pytest
import torch

from transferkit import experiment
from transferkit.cli import main
from transferkit.config import ExperimentConfig, load_config
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.experiment import load_model, run_experiment
from transferkit.fewshot_eval import run_episodes


class _Writes:
    """Unpickling it writes the file ``marker``: what a hostile ``models/*.pt`` could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "ran")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("h_fg_runs")
    cfg = ExperimentConfig(name="fs", source="digits", target="digits", source_classes="0-4", target_classes="5-9",
                           methods=["finetune", "linear_probe"], k=2, repeats=1, select_on="none",
                           out_dir=str(out), pretrain=TrainConfig(steps=4, eval_every=4),
                           train=TrainConfig(steps=2, eval_every=2))
    run = out / "fs"
    run_experiment(cfg, run_dir=run, log=lambda *a: None)
    return run


def _pickles_only(finished_run, tmp_path):
    """A copy of the run whose jobs hold only a hostile ``.pt`` each (and no network file), and its marker."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "ran.txt"
    for net_file in (run / "models").glob("*.safetensors"):
        net_file.unlink()
    for pt in (run / "models").glob("*.pt"):
        torch.save(_Writes(marker), pt)
    return run, marker


def test_episodes_read_each_job_s_network_file_and_unpickle_nothing(finished_run, monkeypatch):
    assert sorted(p.name for p in (finished_run / "models").glob("*.safetensors")) == [
        "finetune-k=2-s0.safetensors", "linear_probe-k=2-s0.safetensors"]
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("episodes unpickled a model file"))
    rows, _ = run_episodes(finished_run, None, ["prototype"], 5, [1], 5, 3, 0, lambda *a: None)
    assert {r["method"] for r in rows} == {"finetune/prototype", "linear_probe/prototype"}


def test_the_network_file_gives_the_pickled_model_s_embedding(finished_run):
    images = torch.rand(4, 1, 28, 28)
    for method in ("finetune", "linear_probe"):
        pickled = load_model(finished_run, method).net
        read = experiment.load_job_network(finished_run, method, in_channels=1)
        assert torch.equal(read.forward_features(images), pickled.forward_features(images))


def test_episodes_refuse_a_run_of_pickled_models_without_running_them(finished_run, tmp_path, capsys):
    run, marker = _pickles_only(finished_run, tmp_path)
    with pytest.raises(TransferkitError, match=r"unpickling a file runs whatever code it names.*--trust-pickles"):
        run_episodes(run, None, ["prototype"], 5, [1], 5, 3, 0, lambda *a: None)
    assert not marker.exists()
    assert main(["episodes", str(run), "--k-shot", "1", "--n-query", "3", "--episodes", "3"]) != 0
    assert "--trust-pickles" in capsys.readouterr().err and not marker.exists()


def test_trust_pickles_loads_them_as_before_and_a_pt_of_no_method_is_named(finished_run, tmp_path):
    run, marker = _pickles_only(finished_run, tmp_path)
    with pytest.raises(TransferkitError, match=r"holds a int, not a model"):
        experiment.load_job_network(run, "linear_probe", trust_pickles=True)
    assert marker.read_text() == "ran"  # the opt-in unpickles, as load_model always did
    torch.save({"net": 1}, run / "models" / "linear_probe-k=2-s0.pt")
    with pytest.raises(TransferkitError, match=r"holds a dict, not a model"):
        load_model(run, "linear_probe")


def test_the_uda_bench_t_sne_refuses_a_pickled_model(finished_run, tmp_path):
    from transferkit.bench import uda
    run, marker = _pickles_only(finished_run, tmp_path)
    cfg = load_config(run / "config.yaml")
    with pytest.raises(TransferkitError, match="saved only its pickled model .*which the t-SNE does not read: "
                                               "unpickling runs whatever code the file names"):
        uda._adapted(cfg, run, "linear_probe", None)
    assert not marker.exists()


# ---- a network file's prototype_head metadata --------------------------------------------------------------------
def _prototype_file(path, stored):
    from safetensors.torch import save_file

    from transferkit.backbones import build_backbone
    net = build_backbone("lenet", num_classes=3, in_channels=1, image_size=28, head="prototype")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata={"prototype_head": stored})
    return path


@pytest.mark.parametrize("stored, field", [
    ("{not json", "must be a JSON object"),
    ('["cosine", 2]', "must be a JSON object"),
    ('{"metric": "cosine"}', "its scale must be a finite number > 0, got 'None'"),
    ('{"metric": "rm -rf", "scale": "nan"}', "its metric must be one of sqeuclidean, cosine, got 'rm -rf'"),
    ('{"metric": "cosine", "scale": "nan"}', "its scale must be a finite number > 0, got 'nan'"),
    ('{"metric": "cosine", "scale": NaN}', "its scale must be a finite number > 0, got 'nan'"),
    ('{"metric": "cosine", "scale": -1}', "its scale must be a finite number > 0, got '-1'"),
    ('{"metric": ["cosine"], "scale": 2}', "its metric must be one of"),
    ('{"metric": "cosine", "scale": 1' + "0" * 400 + "}", "its scale must be a finite number > 0"),
])
def test_bad_prototype_head_metadata_is_named_with_its_file_and_field(tmp_path, stored, field):
    from transferkit.networks import load_network
    path = _prototype_file(tmp_path / "proto.safetensors", stored)
    with pytest.raises(TransferkitError) as caught:
        load_network(path, "lenet", 1)
    assert f"network file {path}: its metadata prototype_head" in str(caught.value)
    assert field in str(caught.value)


def test_good_prototype_head_metadata_is_restored(tmp_path):
    from transferkit.networks import load_network
    net = load_network(_prototype_file(tmp_path / "proto.safetensors", '{"metric": "cosine", "scale": 5}'), "lenet", 1)
    assert (net.head.metric, net.head.scale) == ("cosine", 5.0) and isinstance(net.head.scale, float)


# ---- a cache others may write ------------------------------------------------------------------------------------
@pytest.mark.skipif(__import__("os").name == "nt", reason="POSIX mode bits")
def test_a_cache_every_user_may_write_is_named_once(tmp_path, monkeypatch):
    import warnings

    from transferkit import io
    from transferkit.errors import TransferkitWarning
    shared, own = tmp_path / "shared", tmp_path / "own"
    shared.mkdir()
    own.mkdir()
    shared.chmod(0o777)
    own.chmod(0o700)
    monkeypatch.setattr(io, "_CACHES_CHECKED", set())
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(shared))
    with pytest.warns(TransferkitWarning, match=rf"the cache {shared} .*every user may write it.*chmod go-w"):
        assert io.cache_dir() == shared
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(own))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert io.cache_dir() == own  # the user's own: quiet
        monkeypatch.setenv("TRANSFERKIT_CACHE", str(shared))
        assert io.cache_dir() == shared  # named once
