"""Session 77: a fit's checkpoint clean-up removes only the stage folders it wrote; the configs ship in the
package (``transferkit run demo`` from any folder)."""
from pathlib import Path

import pytest
from helpers import toy_domain
from test_api_mutation import ONE

from transferkit import Transfer
from transferkit.errors import TransferkitError


def test_fit_keeps_a_users_checkpoint_folder_beside_its_own_stages(tmp_path, one_thread):
    root = tmp_path / "ckpt"
    other = root / "other-run"  # another fit's (or the user's) resumable checkpoint in the same folder
    other.mkdir(parents=True)
    (other / "last.json").write_text("{}")
    Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE).fit(
        target=toy_domain(8), source=toy_domain(16, classes=4), checkpoint_dir=root)
    assert (other / "last.json").read_text() == "{}"
    assert sorted(p.name for p in root.iterdir()) == ["other-run"]  # the fit's own stages are gone


def test_run_finds_a_shipped_config_by_name_from_any_folder(tmp_path, monkeypatch):
    from transferkit.config import BUNDLED_CONFIGS, bundled_config_names, config_file
    monkeypatch.chdir(tmp_path)  # no configs/ here: a wheel's user
    demo = BUNDLED_CONFIGS / "demo.yaml"
    assert config_file("demo") == config_file("demo.yaml") == config_file("configs/demo.yaml") == demo
    (tmp_path / "demo.yaml").write_text("k: 3\n")
    assert config_file("demo.yaml") == Path("demo.yaml")  # a file of the user's wins
    with pytest.raises(TransferkitError, match=r"config file other/demo.yaml does not exist; the configs that ship "
                                               r"with transferkit are cross_task, demo, label_efficiency"):
        config_file("other/demo.yaml")
    assert {"cross_task", "demo", "label_efficiency"} <= set(bundled_config_names())


def test_run_help_names_the_shipped_configs(capsys):
    from transferkit.cli import main
    from transferkit.config import bundled_config_names
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"ships with transferkit ({', '.join(sorted(bundled_config_names()))})" in help_text


def test_print_config_of_a_shipped_config_by_name(tmp_path, monkeypatch, capsys):
    from transferkit.cli import main
    from transferkit.config import load_config
    monkeypatch.chdir(tmp_path)
    main(["run", "cross_task", "--print-config"])
    (tmp_path / "my.yaml").write_text(capsys.readouterr().out)
    from transferkit.config import BUNDLED_CONFIGS
    assert load_config(tmp_path / "my.yaml") == load_config(BUNDLED_CONFIGS / "cross_task.yaml")
