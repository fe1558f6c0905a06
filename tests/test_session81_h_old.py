"""Behaviour items left open by earlier notes (session 81, helper h_old): each test fails on the code
before its fix."""
import os

import pytest

from transferkit.errors import TransferkitError


# ---- io.check_stream: a named pipe behind /dev/fd/N is refused, an anonymous pipe is not; one stat -------------
@pytest.fixture
def named_pipe_fds(tmp_path):
    os.mkfifo(tmp_path / "p")
    r = os.open(tmp_path / "p", os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(tmp_path / "p", os.O_WRONLY)
    yield r, w
    os.close(r)
    os.close(w)


@pytest.mark.skipif(not os.path.isdir("/dev/fd") or not hasattr(os, "mkfifo"), reason="POSIX /dev/fd and named pipes")
def test_a_named_pipe_behind_dev_fd_is_refused(named_pipe_fds):
    from transferkit.io import append_jsonl, check_stream
    r, w = named_pipe_fds
    for path in (f"/dev/fd/{w}", f"/proc/self/fd/{w}"):
        if os.path.exists(path):
            with pytest.raises(TransferkitError, match=r"is a named pipe \(the one that descriptor opened\)"):
                check_stream(path)
    with pytest.raises(TransferkitError, match="is a named pipe"):
        append_jsonl(f"/dev/fd/{w}", {"step": 1})
    with pytest.raises(BlockingIOError):  # nothing was written to it
        os.read(r, 100)


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="POSIX /dev/fd")
def test_an_anonymous_pipe_behind_dev_fd_is_still_written():
    from transferkit.io import append_jsonl, check_stream
    r, w = os.pipe()
    try:
        assert check_stream(f"/dev/fd/{w}") is True
        append_jsonl(f"/dev/fd/{w}", {"step": 1})
        assert os.read(r, 100) == b'{"step": 1}\n'
    finally:
        os.close(r)
        os.close(w)


def test_append_jsonl_stats_the_metrics_path_once(tmp_path, monkeypatch):
    from transferkit import io
    calls, real = [], os.stat
    monkeypatch.setattr(io.os, "stat", lambda p, *a, **k: (calls.append(str(p)), real(p, *a, **k))[1])
    for path in (tmp_path / "m.jsonl", "/dev/null"):
        calls.clear()
        io.append_jsonl(path, {"step": 1})
        assert calls.count(str(path)) == 1, calls
    assert (tmp_path / "m.jsonl").read_text() == '{"step": 1}\n'


# ---- userdata: a 16-bit grey+alpha PNG reads as grey, transparency on white (as an 8-bit LA PNG) ---------------
def _png_la16(path, grey, alpha):
    """A 16-bit grey+alpha PNG (colour type 4, depth 16), written by hand: Pillow saves none."""
    import struct
    import zlib

    import numpy as np
    a = np.stack([grey, alpha], axis=-1).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in a)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", a.shape[1], a.shape[0], 16, 4, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_a_16_bit_grey_alpha_png_reads_as_grey_on_white(tmp_path):
    import numpy as np
    from PIL import Image

    from transferkit.userdata import load_image_folder, read_images
    grey = np.tile(np.arange(4) * 20000, (3, 1))  # 0, 20000, 40000, 60000 (16-bit)
    alpha = np.full((3, 4), 65535)
    alpha[0, 0] = 0  # a transparent black pixel: white
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        _png_la16(tmp_path / c / "x.png", grey, alpha)
    assert Image.open(tmp_path / "a" / "x.png").mode == "RGBA"  # what Pillow makes of it
    x = read_images([tmp_path / "a" / "x.png"])
    assert x.shape == (1, 1, 3, 4)  # one grey channel, as an 8-bit LA PNG
    want = np.round(grey / 65535 * 255) / 255
    want[0, 0] = 1.0
    np.testing.assert_allclose(x[0, 0].numpy(), want, atol=1 / 255)
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (2, 1, 3, 4)


# ---- run_experiment: a checkpoints/ or failed/ linked out of the run directory is refused before any job ------
@pytest.mark.parametrize("folder", ["checkpoints", "failed"])
def test_a_written_folder_linked_out_of_the_run_is_refused(tmp_path, monkeypatch, folder):
    from helpers import toy_named_domains

    from transferkit.config import load_config
    from transferkit.experiment import run_experiment
    toy_named_domains(monkeypatch)
    cfg = load_config(None, [f"out_dir={tmp_path / 'runs'}", "name=r", "source=digits", "target=mnist",
                             "methods=[target_only]", "k=2", "repeats=1", "train.steps=4", "train.checkpoint_every=2",
                             "train.eval_every=2", "train.batch_size=8", "select_on=none", "train.progress=false"])
    run_dir, elsewhere = tmp_path / "runs" / "r", tmp_path / "elsewhere"
    run_dir.mkdir(parents=True)
    elsewhere.mkdir()
    (run_dir / folder).symlink_to(elsewhere)
    with pytest.raises(TransferkitError, match=rf"{folder} is a symbolic link .*outside .*remove the link"):
        run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    assert not any(elsewhere.iterdir())


def test_a_written_folder_linked_inside_the_run_is_followed(tmp_path):
    from transferkit.io import check_written_folders
    (tmp_path / "kept").mkdir()
    (tmp_path / "checkpoints").symlink_to(tmp_path / "kept")
    check_written_folders(tmp_path)  # remove_inside removes through it too


def test_a_benchmark_s_failed_folder_linked_out_is_refused_before_any_job(tmp_path):
    from transferkit.jobs import run_jobs
    jobs, elsewhere = tmp_path / "bench" / "jobs", tmp_path / "elsewhere"
    jobs.mkdir(parents=True)
    elsewhere.mkdir()
    (jobs / "failed").symlink_to(elsewhere)
    ran = []
    with pytest.raises(TransferkitError, match="failed is a symbolic link .*failed jobs' tracebacks there"):
        run_jobs([(jobs / "a.json", lambda: ran.append(1) or {"x": 1})])
    assert not ran and not any(elsewhere.iterdir())


# ---- io.remove_inside: a link left behind is warned of once per run, each run of the process ------------------
def test_a_second_run_in_one_process_is_told_of_a_link_again(tmp_path, monkeypatch):
    import warnings

    from helpers import linked_img_folder, toy_named_domains

    from transferkit.config import load_config
    from transferkit.errors import TransferkitWarning
    from transferkit.experiment import run_experiment
    _, elsewhere, warned = linked_img_folder(tmp_path, "bench")
    first = warned()
    assert warned() == 0  # once per link in a run (a resume passes it for every finished job)
    toy_named_domains(monkeypatch)
    cfg = load_config(None, [f"out_dir={tmp_path / 'runs'}", "source=digits", "target=mnist", "methods=[target_only]",
                             "k=2", "repeats=1", "train.steps=2", "train.batch_size=8", "select_on=none",
                             "train.progress=false"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferkitWarning)
        run_experiment(cfg, log=None)
    assert (first, warned()) == (1, 1)  # the second run is told too
    assert (elsewhere / "a.png").read_text() == "keep me"


# ---- report: a saved figure's alt text says what it shows (then its path), not its path alone ------------------
def test_a_saved_t_sne_figure_s_alt_text_says_what_it_shows(tmp_path):
    import json

    import torch

    from transferkit.plots import tsne_embeddings
    from transferkit.report import write_report
    run = tmp_path / "run"
    run.mkdir()
    row = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
    (run / "results.json").write_text(json.dumps({"name": "x", "config": {}, "rows": [row]}))
    g = torch.Generator().manual_seed(0)
    pair = (torch.randn(12, 3, generator=g), torch.randn(12, 3, generator=g))
    tsne_embeddings({"source only (before)": pair, "dann (after)": pair}, run / "tsne_mnist_usps.png",
                    domain_names=("mnist", "usps"))
    (run / "img").mkdir()
    (run / "img" / "accuracy_vs_k_old.png").write_bytes((run / "tsne_mnist_usps.png").read_bytes()[:8])  # older
    html_path, md_path = write_report(run)
    page, md = html_path.read_text(), md_path.read_text()
    shown = "t-SNE of mnist and usps embeddings, panels: source only (before), dann (after) (tsne_mnist_usps.png)"
    assert f'alt="{shown}"' in page and f"![{shown}](" in md
    # a figure without a description (an older run's): what its file name tells
    assert 'alt="accuracy against labels per class (k), one line per method (img/accuracy_vs_k_old.png)"' in page
    assert 'alt="tsne_mnist_usps.png"' not in page


# ---- tables: setting "all" says the labels per class its rows trained on -----------------------------------------
def test_the_setting_all_says_how_many_labels_per_class_were_used():
    from transferkit.results import summarize
    from transferkit.tables import markdown_table
    row = {"method": "target_only", "source": "s", "target": "t", "setting": "all", "accuracy": 0.5, "wall_s": 1.0,
           "n_labeled": 8, "labels_per_class": [4, 4]}
    rows = [{**row, "seed": 0}, {**row, "seed": 1},
            {**row, "method": "source_only", "seed": 0, "n_labeled": 0, "labels_per_class": None},
            {**row, "method": "finetune", "seed": 0, "labels_per_class": [3, 5]},
            {**row, "method": "older", "seed": 0, "labels_per_class": None}]  # a row before labels_per_class
    rows[-1].pop("labels_per_class")
    table = markdown_table(summarize(rows), rows)
    assert "| target_only | s | t | all (4 per class) |" in table
    assert "| finetune | s | t | all (3-5 per class) |" in table
    assert "| source_only | s | t | all |" in table  # it read no target label
    assert "| older | s | t | all (8 labels in all) |" in table  # its count where the row has no labels_per_class
    from transferkit.tables import setting_text
    k = {**row, "setting": "k=4", "seed": 0}
    assert setting_text(summarize([k])[0], [k]) == "k=4"  # a setting that says its count: as it is


def test_a_run_s_rows_record_their_labels_per_class():
    import torch

    from transferkit.domain import Domain
    from transferkit.rundata import labels_per_class
    d = Domain("d", torch.zeros(7, 1, 2, 2), torch.tensor([0, 0, 0, 1, 1, 1, 1]), ["a", "b", "c"])
    assert labels_per_class(d) == [0, 4]  # class c has none


# ---- fewshot_eval.episode_accuracies: the heads computed on the device given; the CPU's results as before -------
def _episode_features():
    import torch
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(8)
    return torch.randn(48, 5, generator=g) + labels[:, None].float(), labels


#: episode_accuracies of _episode_features (n_way=3, k_shot=2, n_query=4, episodes=7, seed=3, steps=5) as the code
#: of commit 7609309, before the heads took a device, gives them (run there, one thread)
BEFORE_DEVICE = {
    "prototype": [1.0, 0.5833333333333334, 0.9166666666666666, 0.75, 0.75, 0.8333333333333334, 0.4166666666666667],
    "linear": [0.5833333333333334, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 0.4166666666666667,
               0.3333333333333333, 0.4166666666666667],
    "cosine": [0.6666666666666666, 0.4166666666666667, 0.5833333333333334, 0.4166666666666667, 0.3333333333333333,
               0.25, 0.5],
}


@pytest.mark.parametrize("head", ["prototype", "linear", "cosine"])
def test_episode_heads_on_the_cpu_give_bitwise_the_accuracies_of_before_the_device(head):
    import torch

    from transferkit.fewshot_eval import episode_accuracies
    feats, labels = _episode_features()
    kw = dict(n_way=3, k_shot=2, n_query=4, episodes=7, seed=3, steps=5)
    for device in (None, "cpu"):
        got = episode_accuracies(feats, labels, head, device=device, **kw)
        assert got.tolist() == BEFORE_DEVICE[head] and got.device.type == "cpu" and got.dtype == torch.float64


def test_episode_heads_are_fit_on_the_device_given(monkeypatch):
    import torch

    from transferkit import fewshot_eval, runtime
    feats, labels = _episode_features()
    seen = []

    class Seen(Exception):
        pass

    def spy(kind, support, *a):
        seen.append(support.device)
        raise Seen
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("meta"))  # a device this CPU machine has
    monkeypatch.setattr(fewshot_eval, "_fit_head", spy)
    with pytest.raises(Seen):
        fewshot_eval.episode_accuracies(feats, labels, "linear", n_way=3, k_shot=2, n_query=4, episodes=2,
                                        device="cuda")
    with pytest.raises(Seen):  # evaluate_episodes (transferkit episodes --device) hands it on
        fewshot_eval.evaluate_episodes(feats, labels, "cosine", n_way=3, k_shot=2, n_query=4, episodes=2,
                                       device="cuda")
    assert seen == [torch.device("meta")] * 2

