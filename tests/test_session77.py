"""Session 77: a fit's checkpoint clean-up removes only the stage folders it wrote."""
from helpers import toy_domain
from test_api_mutation import ONE

from transferkit import Transfer


def test_fit_keeps_a_users_checkpoint_folder_beside_its_own_stages(tmp_path, one_thread):
    root = tmp_path / "ckpt"
    other = root / "other-run"  # another fit's (or the user's) resumable checkpoint in the same folder
    other.mkdir(parents=True)
    (other / "last.json").write_text("{}")
    Transfer("finetune", backbone="lenet", train=ONE, pretrain=ONE).fit(
        target=toy_domain(8), source=toy_domain(16, classes=4), checkpoint_dir=root)
    assert (other / "last.json").read_text() == "{}"
    assert sorted(p.name for p in root.iterdir()) == ["other-run"]  # the fit's own stages are gone
