"""Session 80 helper h_nd2: a report's stale figures are removed only after its new report.md is
written; ``bench list`` warns about run flags it ignores; ``--version`` names the git revision;
HEIC / HEIF photos in a user image folder are named with what to do; ``episodes --device``."""

import json
import re
import warnings

import pytest

import transferkit.report as report
from transferkit.errors import TransferkitWarning

ROW = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}


def test_a_failed_report_write_keeps_the_old_report_md_images(tmp_path, figures, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": [ROW]}))
    files = run / "report_files"
    files.mkdir()
    old = "".join(f"![old](report_files/figure{i:02d}.png)\n" for i in range(6))  # more figures than now
    (run / "report.md").write_text(old)
    for i in range(6):
        (files / f"figure{i:02d}.png").write_bytes(b"old")
    write_text = report.write_text

    def failing(path, text):
        if path.name == "report.md":
            raise OSError("disk full")
        return write_text(path, text)

    monkeypatch.setattr(report, "write_text", failing)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(run)
    assert (run / "report.md").read_text() == old
    assert all((run / name).exists() for name in re.findall(r"\((report_files/figure\d+\.png)\)", old))
    monkeypatch.setattr(report, "write_text", write_text)
    md = report.write_report(run)[1].read_text()  # written: the stale ones go
    kept = sorted(p.name for p in files.iterdir())
    assert kept == re.findall(r"\(report_files/(figure\d+\.png)\)", md) and len(kept) < 6


def test_bench_list_warns_about_the_run_flags_it_ignores(capsys):
    from helpers import run_cli
    with pytest.warns(TransferkitWarning) as caught:
        code, out, _ = run_cli(capsys, "bench", "list", "--quick", "--resume", "r/x", "--print-plan",
                               "--set", "seeds=2")
    assert code == 0 and out.splitlines()[0].startswith("demo ")  # it still lists
    assert [str(w.message) for w in caught] == [
        "`bench list` only lists the suites: it ignores --quick, --resume r/x, --print-plan, --set seeds=2 (give "
        "a suite's name to run it with them)"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_cli(capsys, "bench", "list")[0] == 0  # nothing given: no warning


@pytest.mark.parametrize("revision, line", [("0123456789ab+dirty", "transferkit 0.1.0 (revision 0123456789ab+dirty)"),
                                            (None, "transferkit 0.1.0")])
def test_version_names_the_git_revision_where_there_is_one(capsys, monkeypatch, revision, line):
    import transferkit.runtime as runtime
    from transferkit import __version__, cli
    assert __version__ == "0.1.0"
    monkeypatch.setattr(runtime, "source_revision", lambda: revision)
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == line + "\n"


def test_the_revision_is_looked_up_only_for_version(monkeypatch):
    import transferkit.runtime as runtime
    from transferkit import cli
    monkeypatch.setattr(runtime, "source_revision", lambda: pytest.fail("git ran for another command"))
    assert cli.build_parser().parse_args(["domains"]).command == "domains"


def test_heic_and_heif_photos_are_named_in_the_skipped_files_warning_with_what_to_do(tmp_path):
    import numpy as np
    from PIL import Image

    from transferkit.userdata import load_image_folder
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(np.full((4, 4), 40 * i + 60, np.uint8)).save(tmp_path / c / f"{i}.png")
    for name in ("cat/IMG_1.HEIC", "dog/IMG_2.heif", "dog/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.warns(TransferkitWarning) as caught:
        load_image_folder(tmp_path)
    skipped = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(skipped) == 1 and "skipped 3 file(s) that are not images by their name" in skipped[0]
    assert "; 2 of them are HEIC / HEIF photos (an iPhone's), which transferkit does not read: convert them to " \
           "JPEG or PNG (e.g. with pillow-heif installed, `pip install pillow-heif`" in skipped[0]
    (tmp_path / "cat/IMG_1.HEIC").unlink()
    (tmp_path / "dog/IMG_2.heif").unlink()
    with pytest.warns(TransferkitWarning) as caught:
        load_image_folder(tmp_path)
    assert not any("HEIC" in str(w.message) for w in caught)  # a .txt alone: no such words


def test_episodes_takes_a_device_and_refuses_an_unavailable_gpu_as_run_does(tmp_path, capsys, monkeypatch):
    import torch
    from helpers import run_cli

    import transferkit.fewshot_eval as fewshot_eval
    run_episodes = fewshot_eval.run_episodes
    calls = []
    row = {"method": "finetune/prototype", "source": "s", "target": "t", "setting": "5-way 1-shot (k=2)", "seed": 0,
           "accuracy": 0.5, "wall_s": 1.0, "episodes": 600, "classes": 5}
    monkeypatch.setattr(fewshot_eval, "run_episodes", lambda *a: calls.append(a[-1]) or ([row], {"config": {}}))
    monkeypatch.delenv("TRANSFERKIT_DEVICE", raising=False)
    assert run_cli(capsys, "episodes", str(tmp_path), "--device", "cpu")[0] == 0
    assert run_cli(capsys, "episodes", str(tmp_path))[0] == 0
    code, _, err = run_cli(capsys, "episodes", str(tmp_path), "--device", "gpu")
    assert calls == ["cpu", "cpu"] and code == 2 and "unknown device 'gpu'; choose one of" in err
    if torch.cuda.is_available():
        return
    monkeypatch.setattr(fewshot_eval, "run_episodes", run_episodes)  # the real one: refused before reading the run
    code, _, err = run_cli(capsys, "episodes", str(tmp_path / "none"), "--device", "cuda")
    assert code == 2 and err.strip() == (f"transferkit: error: device cuda requested but CUDA is not available "
                                         f"(this torch {torch.__version__} sees no GPU): use --device cpu, or auto")
