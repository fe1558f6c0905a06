"""Inputs a user plausibly gives that used to fail with a raw error, pass silently or lose a result
(left by stop 71's bad-input audits and found by stop 72's); each test fails on the code before its fix."""
import pytest
import torch

from transferkit.errors import TransferkitError


def _run_config(*argv):
    from transferkit import cli
    return cli._run_config(cli.build_parser().parse_args(["run", *argv]))


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="auto is cpu here")
@pytest.mark.parametrize("began, given", [("cpu", "auto"), ("auto", "cpu")])
def test_device_auto_resumes_a_run_of_the_device_it_picks(tmp_path, began, given):
    # before: `run --resume DIR --device auto` of a cpu run was refused as "another config (device: 'cpu' there,
    # 'auto' now)", although auto runs it on the cpu
    from transferkit.config import dump_config, load_config
    from transferkit.rundir import check_same_config
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(load_config(None, [f"device={began}", "k=2"])))
    cfg = _run_config("--resume", str(run), "--device", given)
    assert cfg.device == cfg.train.device == began
    check_same_config(run / "config.yaml", cfg)
    with pytest.raises(TransferkitError, match="unknown device 'gpu'"):
        _run_config("--resume", str(run), "--device", "gpu")


def test_a_saved_model_of_the_same_seed_is_the_same_file(tmp_path):
    # before: the pickled method held the seconds its training took (fit_wall_s), so two runs' models/*.pt differed
    from helpers import seeded_lenet

    from transferkit.experiment import save_model
    from transferkit.methods import get_method
    saved = []
    for i in range(2):
        method = get_method("dann")(seeded_lenet())
        method.fit_wall_s = float(i + 1)
        save_model(tmp_path / f"{i}.pt", method)
        saved.append((tmp_path / f"{i}.pt").read_bytes())
    assert saved[0] == saved[1] and method.extra_results() == {"fit_wall_s": 2.0}


def test_a_method_reading_a_stream_it_did_not_declare_is_told_which():
    # before: Python's "cannot unpack non-iterable NoneType object" from inside the method's losses
    import torch.nn.functional as F
    from helpers import toy_domain

    from transferkit import Transfer
    from transferkit.config import TrainConfig
    from transferkit.methods.base import Method

    class ReadsSource(Method):
        name = "reads_source"
        streams = ("target",)

        def losses(self, batch):
            x, y = batch.source
            return {"ce": F.cross_entropy(self.forward_from_input(x), y)}

    tiny = TrainConfig(steps=2, batch_size=8, progress=False)
    model = Transfer("finetune", backbone="lenet", train=tiny, pretrain=tiny)
    model.method_cls = ReadsSource
    with pytest.raises(TransferkitError, match=r"method 'reads_source': its losses read a stream this batch does not "
                                               r"have .*streams = \('target',\); batch\.source / batch\.unlabeled is "
                                               r"None here\); add the stream it reads to its class's streams"):
        model.fit(source=toy_domain(16, name="a"), target=toy_domain(16, seed=1, name="b"))


@pytest.mark.parametrize("text, damage", [("", "is empty"), ("k: [2\n", "is not valid YAML"),
                                          ("- k\n", "is not a mapping of keys")])
def test_a_damaged_config_of_a_run_gets_advice_for_the_run(tmp_path, text, damage):
    # before: an emptied config.yaml was told to "leave out the config file to run the defaults", which a resume
    # cannot do, and with a config given the refusal named no way on
    config, run = tmp_path / "c.yaml", tmp_path / "run"
    config.write_text("k: 2\n")
    (run / "jobs").mkdir(parents=True)
    (run / "config.yaml").write_text(text)
    for argv in ([], [str(config)]):
        with pytest.raises(TransferkitError, match=f"--resume {run}: its config.yaml {damage}.*move it away and give "
                                                   f"the config the run ran with: transferkit run CONFIG --resume"):
            _run_config(*argv, "--resume", str(run))
    (run / "config.yaml").rename(tmp_path / "moved.yaml")
    assert _run_config(str(config), "--resume", str(run)).k == 2
