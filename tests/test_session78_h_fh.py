"""Symbolic links in a run directory are not followed out of it: locks, metrics, removals, the
report; and run names the file system refuses are refused by the config."""

import base64
import json
import os

import pytest

from transferkit import io
from transferkit.config import ExperimentConfig
from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.io import append_jsonl, directory_lock, waiting_lock
from transferkit.jobs import run_jobs
from transferkit.report import write_report
from transferkit.source import _drop_checkpoints_of_another_source

ROW = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}


def _victim(tmp_path, text="keep me"):
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text(text)
    return victim


def test_a_run_lock_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path):
    victim, run = _victim(tmp_path), tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(TransferkitError, match=r"\.lock is a symbolic link"):
        with directory_lock(run):
            pass
    assert victim.read_text() == "keep me"


def test_a_run_lock_that_is_a_folder_is_refused_by_name(tmp_path):
    (tmp_path / ".lock").mkdir()
    with pytest.raises(TransferkitError, match=r"\.lock is not a regular file"):
        with directory_lock(tmp_path):
            pass


def test_a_cache_lock_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path):
    victim = _victim(tmp_path)
    lock = tmp_path / "domains" / "mnist-v2-x.lock"
    lock.parent.mkdir()
    lock.symlink_to(victim)
    with pytest.raises(TransferkitError, match="mnist-v2-x.lock"):
        with waiting_lock(lock):
            pass
    assert victim.read_text() == "keep me"


def test_a_lock_file_still_locks_and_names_its_holder(tmp_path):
    with directory_lock(tmp_path) as path:
        assert path.read_text() == str(os.getpid())
    with waiting_lock(tmp_path / "c.lock"):
        assert (tmp_path / "c.lock").read_text().startswith(f"pid {os.getpid()} ")


def test_metrics_are_not_appended_through_a_symlink(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(TransferkitError, match="metrics.jsonl is a symbolic link"):
        append_jsonl(tmp_path / "metrics.jsonl", {"step": 1})
    assert victim.read_text() == "keep me"


def test_metrics_append_still_ends_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"st')
    append_jsonl(path, {"step": 2})
    assert path.read_text().splitlines()[-1] == '{"step": 2}' and path.read_text().count("\n") == 3


def test_removal_through_a_symlinked_folder_leaves_the_file_with_a_warning_naming_the_link(tmp_path):
    run, victim = tmp_path / "run", _victim(tmp_path)
    run.mkdir()
    (run / "checkpoints").symlink_to(victim.parent)
    with pytest.warns(TransferkitWarning, match=r"victim.txt is left in place: .*checkpoints is a symbolic link to "
                                                r".*elsewhere.*removes nothing outside"):
        io.remove_inside(run / "checkpoints" / "victim.txt", run)
    assert victim.read_text() == "keep me"
    (run / "models").mkdir()
    (run / "models" / "a.pt").write_text("x")
    io.remove_inside(run / "models" / "a.pt", run)
    io.remove_inside(run / "models" / "never-written.pt", run)  # a missing file: nothing, and no refusal
    assert not (run / "models" / "a.pt").exists()


def test_a_jobs_traceback_is_not_removed_through_a_symlinked_failed_folder(tmp_path):
    jobs = tmp_path / "bench" / "jobs"
    jobs.mkdir(parents=True)
    victim = _victim(tmp_path)
    (victim.parent / "a.txt").write_text("keep me")
    (jobs / "failed").symlink_to(victim.parent)
    # since session 81: refused before any job (written through, never removed: the link is not followed)
    with pytest.raises(TransferkitError, match="failed is a symbolic link .*outside .*remove the link"):
        run_jobs([(jobs / "a.json", lambda: {"x": 1})])
    assert (victim.parent / "a.txt").read_text() == "keep me" and not (jobs / "a.json").exists()


def test_checkpoints_of_another_source_are_not_removed_through_a_symlink(tmp_path):
    run, victim = tmp_path / "run", _victim(tmp_path)
    run.mkdir()
    (run / "checkpoints").symlink_to(victim.parent)
    _drop_checkpoints_of_another_source(run, "new-digest", lambda line: None)
    # the link goes (the run starts a checkpoints folder of its own: none of the old source's is resumed)
    assert victim.read_text() == "keep me" and not os.path.lexists(run / "checkpoints")


def _finished(run):
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": [ROW]}))
    return run


def test_a_report_files_symlink_is_refused_and_the_folder_it_leads_to_kept(tmp_path):
    run, victim = _finished(tmp_path / "run"), _victim(tmp_path)
    (victim.parent / "figure07.png").write_bytes(b"not the report's")
    (run / "report_files").symlink_to(victim.parent)
    with pytest.raises(TransferkitError, match="report_files is a symbolic link"):
        write_report(run)
    assert sorted(p.name for p in victim.parent.iterdir()) == ["figure07.png", "victim.txt"]


def test_a_report_leaves_out_files_linked_from_outside_the_run(tmp_path):
    run = _finished(tmp_path / "run")
    secret = _victim(tmp_path, "name: SECRET-7f3a\n")
    png = secret.parent / "x.png"
    png.write_bytes(b"\x89PNG outside-the-run-0c1d")
    (run / "sub").mkdir()
    (run / "sub" / "config.yaml").symlink_to(secret)
    (run / "tsne.png").symlink_to(png)
    (run / "own.png").write_bytes(b"\x89PNG the-run-own-9e2b")
    html_path, md_path = write_report(run)
    page, md = html_path.read_text(), md_path.read_text()
    assert "SECRET-7f3a" not in page + md
    assert base64.b64encode(png.read_bytes()).decode() not in page
    assert base64.b64encode((run / "own.png").read_bytes()).decode() in page
    assert "figures not shown: symbolic links out of the run directory (tsne.png)" in page
    assert "config.yaml files not shown: symbolic links out of the run directory (sub/config.yaml)" in md


@pytest.mark.parametrize("name", ["a\0b", "a" * 300, "é" * 128])
def test_a_run_name_with_a_nul_or_too_long_for_a_folder_is_refused(name):
    with pytest.raises(TransferkitError, match="names the run's folder under out_dir.*at most 255 bytes"):
        ExperimentConfig(name=name)


def test_a_run_name_of_255_bytes_or_with_a_tab_is_taken():  # a tab is a folder name's character (session 78)
    assert ExperimentConfig(name="exp\t2").name == "exp\t2"
    assert ExperimentConfig(name="a" * 255).name == "a" * 255
