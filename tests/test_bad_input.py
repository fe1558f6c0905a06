"""Inputs a user plausibly gives that used to pass silently, fail with a raw error or lose a result
(found by the bad-input audits of stop 71); each test fails on the code before its fix."""
import json

import pytest
import torch
from helpers import image_file, npz_file, run_cli

from transferkit.errors import TransferkitError

# -- few-shot episodes ---------------------------------------------------------------------------


def test_episode_groups_and_labels_may_be_lists_or_names_as_in_retrieval():
    # before: a list of 40 integer ids was refused as "not one integer id per sample"; names as labels of
    # sample_episodes raised numpy's "too many dimensions 'str'"
    from transferkit.fewshot_eval import evaluate_episodes, sample_episodes
    feats, labels = torch.randn(40, 8), torch.arange(4).repeat_interleave(10)
    run = lambda groups: evaluate_episodes(feats, labels, "prototype", n_way=2, k_shot=1, n_query=1,  # noqa: E731
                                           episodes=5, groups=groups)
    tensor = run(torch.arange(40) * 3)
    assert run(list(range(0, 120, 3))) == tensor and run([f"v{i:02d}" for i in range(40)]) == tensor
    names = sample_episodes(["a", "b"] * 5, 2, 1, 1, 3, torch.Generator().manual_seed(0))
    ids = sample_episodes(torch.tensor([0, 1] * 5), 2, 1, 1, 3, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(names, ids))


def test_mean_ci95_of_a_plain_list_is_exact():
    # before: torch.as_tensor(list) went through float32 (0.5999999940395355)
    from transferkit.fewshot_eval import mean_ci95
    mean, ci = mean_ci95([0.5, 0.7])
    assert mean == 0.6 and ci == pytest.approx(1.96 * 0.1414213562373095 / 2 ** 0.5, abs=1e-15)


def test_extract_features_scales_uint8_and_refuses_unscaled_floats():
    # before: uint8 images raised torch's "Input type (unsigned char) and bias type (float)"; 0-255 floats passed
    from transferkit.backbones import build_backbone
    from transferkit.fewshot_eval import extract_features
    torch.manual_seed(0)
    net = build_backbone("lenet", 3)
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.allclose(extract_features(net, pixels), extract_features(net, pixels.float() / 255))
    with pytest.raises(TransferkitError, match=r"extract_features: image values must lie in \[0, 1\].*255"):
        extract_features(net, pixels.float())


def test_episodes_refuses_a_repeated_k_before_scoring(tmp_path, capsys, monkeypatch):
    # before: every model was scored, then "repeat seed 0 (runs merged twice?)" named the wrong cause
    import transferkit.fewshot_eval as fewshot_eval
    monkeypatch.setattr(fewshot_eval, "run_episodes", lambda *a: pytest.fail("scored before the refusal"))
    code, _, err = run_cli(capsys, "episodes", str(tmp_path), "--k-shot", "1", "5", "1")
    assert code == 2 and "--k-shot lists 1 more than once" in err


def test_episodes_of_another_plan_keep_the_earlier_file(tmp_path, capsys, monkeypatch):
    # before: a second `transferkit episodes` with another K replaced episodes.json's rows without a word
    import transferkit.fewshot_eval as fewshot_eval

    def rows(k, method="finetune"):
        return [{"method": f"{method}/prototype", "source": "s", "target": "t", "setting": f"5-way {k}-shot (k=2)",
                 "seed": 0, "accuracy": 0.5, "wall_s": 1.0, "episodes": 600, "classes": 5}]
    answer = {}
    monkeypatch.setattr(fewshot_eval, "run_episodes", lambda *a: (answer["rows"], {"config": {}}))
    stored = lambda name: json.loads((tmp_path / name).read_text())["rows"][0]["setting"]  # noqa: E731
    answer["rows"] = rows(1)
    assert run_cli(capsys, "episodes", str(tmp_path), "--k-shot", "1")[0] == 0
    assert run_cli(capsys, "episodes", str(tmp_path), "--k-shot", "1")[0] == 0  # the same plan: replaced
    assert not (tmp_path / "episodes-1.json").exists()
    answer["rows"] = rows(10)
    code, out, _ = run_cli(capsys, "episodes", str(tmp_path), "--k-shot", "10")
    assert code == 0 and "kept as episodes-1.json" in out
    assert stored("episodes-1.json") == "5-way 1-shot (k=2)" and stored("episodes.json") == "5-way 10-shot (k=2)"
    assert (tmp_path / "episodes-1.md").is_file() and (tmp_path / "episodes.md").is_file()
    answer["rows"] = rows(10, "lext")  # the same plan, other methods
    assert "kept as episodes-2.json" in run_cli(capsys, "episodes", str(tmp_path), "--k-shot", "10")[1]
    assert stored("episodes-2.json") == "5-way 10-shot (k=2)" and stored("episodes-1.json") == "5-way 1-shot (k=2)"


# -- class names as prompts ----------------------------------------------------------------------

@pytest.mark.parametrize("names, message", [
    ("cat", r"a list of class names, not one text \('cat'\)"),
    (["", "cat"], r"class_names\[0\] is ''"),
    (["cat", None], r"class_names\[1\] is None"),
    (["cat", float("nan")], r"class_names\[1\] is nan"),
    (["cat", "  "], r"class_names\[1\] is '  '"),
])
def test_prompts_refuse_a_text_or_a_missing_class_name(names, message):
    # before: "cat" became the classes c, a, t; '' the prompt "a photo of a ." and None the word "None"
    from transferkit.text import class_text_embeddings
    with pytest.raises(TransferkitError, match=message):
        class_text_embeddings(names, "hashing")
    assert class_text_embeddings([0, 1, "cat"], "hashing").shape[0] == 3  # ids are names too


def test_clip_refuses_a_blank_class_name_before_turning_it_into_text():
    from transferkit.backbones import build_backbone
    from transferkit.clip import ClipMethod
    with pytest.raises(TransferkitError, match=r"class_names\[1\] is None"):
        ClipMethod(build_backbone("lenet", 3), captions=["a x", "b y", "c z"], text_encoder="hashing",
                   class_names=["cat", None, "dog"])


# -- run --resume --------------------------------------------------------------------------------

def _run_config(*argv):
    from transferkit import cli
    return cli._run_config(cli.build_parser().parse_args(["run", *argv]))


def test_run_resume_refuses_a_benchmark_directory_even_with_a_config(tmp_path):
    # before: `run CONFIG --resume BENCH` took the benchmark's jobs/ for a run that lost its config.yaml and
    # overwrote the benchmark's results.json with the run's
    from transferkit.io import write_json
    config, bench = tmp_path / "c.yaml", tmp_path / "bench"
    config.write_text("k: 2\n")
    write_json(bench / "plan.json", {"benchmark": "flex", "quick": True})
    write_json(bench / "jobs" / "mnist+blur-r30-s0-ft_all.json", {"method": "ft_all", "accuracy": 0.9})
    for argv in ([str(config)], []):
        with pytest.raises(TransferkitError, match=f"directory of benchmark 'flex', which `transferkit bench flex "
                                                   f"--resume {bench}` continues"):
            _run_config(*argv, "--resume", str(bench))
    assert sorted(p.name for p in bench.rglob("*")) == ["jobs", "mnist+blur-r30-s0-ft_all.json", "plan.json"]


def test_run_resume_of_a_run_killed_before_it_wrote_a_file_takes_its_config(tmp_path):
    # before: the lock such a run leaves made the folder "not empty", and the advice to give the config was refused
    config, killed = tmp_path / "c.yaml", tmp_path / "killed"
    config.write_text("k: 2\n")
    killed.mkdir()
    (killed / ".lock").write_text("")
    with pytest.raises(TransferkitError, match="give its config: transferkit run CONFIG --resume"):
        _run_config("--resume", str(killed))
    assert _run_config(str(config), "--resume", str(killed)).k == 2


def test_run_resume_of_a_folder_of_runs_names_them_instead_of_advising_a_config(tmp_path):
    # before: "give its config: transferkit run CONFIG --resume runs/NAME", which was then refused too
    runs = tmp_path / "runs"
    for stamp in ("2026-01-01_10-00-00", "2026-01-02_10-00-00"):
        (runs / stamp).mkdir(parents=True)
        (runs / stamp / "config.yaml").write_text("k: 2\n")
    with pytest.raises(TransferkitError) as refused:
        _run_config("--resume", str(runs))
    message = str(refused.value)
    assert f"holds runs, one directory each (2026-01-01_10-00-00, 2026-01-02_10-00-00): give one, e.g. " \
           f"{runs / '2026-01-02_10-00-00'}" in message and "CONFIG" not in message


# -- configs and flags ---------------------------------------------------------------------------

@pytest.mark.parametrize("assignment, message", [
    ("k=1 5 10", r"got the text '1 5 10': write a list in brackets, e\.g\. k: \[1, 5, 10\]"),
    ("image_size=28 32", r"got the text '28 32': write one number, not a list, e\.g\. image_size: 5"),
    ("train.lr=1e-3 1e-4", r"got the text '1e-3 1e-4': write one number, not a list, e\.g\. lr: 0\.5"),
])
def test_numbers_separated_by_spaces_get_a_fix_that_is_not_the_same_text(assignment, message):
    # before: "write a number without quotes, e.g. k: 1 5 10", the text given
    from transferkit.config import load_config
    with pytest.raises(TransferkitError, match=message):
        load_config(None, [assignment])


def test_an_unknown_device_set_over_a_config_file_is_named_as_the_key_given(tmp_path):
    # before: "config pretrain: unknown device 'gpu'", a key the user never wrote (load_config's stage copy)
    from transferkit.config import load_config
    config = tmp_path / "c.yaml"
    config.write_text("k: 2\npretrain: {steps: 2}\ntrain: {steps: 2}\n")
    with pytest.raises(TransferkitError) as refused:
        load_config(config, ["device=gpu"])
    assert str(refused.value).startswith("unknown device 'gpu'")


def test_episodes_names_an_empty_heads_flag(tmp_path, capsys, monkeypatch):
    # before: "evaluate_episodes needs heads: ... got []", a function the CLI user never called
    import transferkit.fewshot_eval as fewshot_eval
    monkeypatch.setattr(fewshot_eval, "run_episodes", lambda *a: pytest.fail("scored without a head"))
    code, _, err = run_cli(capsys, "episodes", str(tmp_path), "--heads", " , ")
    assert code == 2 and "--heads ' , ' names no head (one or more of linear, cosine, prototype" in err


# -- messages that named another item from one process to the next --------------------------------

_FIRST_NAMED = """
from transferkit.bench import as_pairs
from transferkit.errors import TransferkitError
from transferkit.plots import _check_one_curve_set
try:
    as_pairs("mnistx:digitsy")
except TransferkitError as e:
    print("pairs", "'mnistx'" in str(e) and "digitsy" not in str(e))
rows = [{"method": "flex", "ratio": r, "setting": s} for r, s in (("r1", "k=1"), ("r1", "k=2"), ("r2", "k=3"),
                                                                   ("r2", "k=4"))]
try:
    _check_one_curve_set(rows)
except TransferkitError as e:
    print("plots", "k=1, k=2" in str(e))
"""


def test_refusals_name_the_first_bad_item_whatever_the_hash_seed():
    # before: a set's order (PYTHONHASHSEED) picked which misspelt domain, or which ratio's settings, was named
    import os
    import subprocess
    import sys
    for seed in ("0", "1", "2", "3"):
        out = subprocess.run([sys.executable, "-c", _FIRST_NAMED], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert out.split() == ["pairs", "True", "plots", "True"], (seed, out)


# -- domains from files --------------------------------------------------------------------------

def test_non_square_npz_images_warn_that_they_are_stretched_as_a_folder_s_do(tmp_path):
    # before: an npz of 20 x 40 images was stretched to 28 x 28 without a word (a folder's warned)
    import numpy as np

    from transferkit.data import load_domain
    pixels = np.random.default_rng(0).integers(0, 256, (6, 20, 40), dtype=np.uint8)
    wide = npz_file(tmp_path / "wide.npz", x=pixels, y=np.arange(6) % 2)
    square = npz_file(tmp_path / "square.npz", x=pixels[:, :, :20], y=np.arange(6) % 2)
    with pytest.warns(UserWarning, match=r"the 6 images of 'npz:.*wide.npz' are 20x40, not square; they are "
                                         r"stretched to 28x28"):
        assert load_domain(f"npz:{wide}", size=28).images.shape == (6, 1, 28, 28)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_domain(f"npz:{square}", size=28)


def test_a_file_named_as_a_domain_gets_advice_that_works(tmp_path, monkeypatch):
    # before: "give it as npz:labels.csv" (then: not an .npz archive); folder:labels.csv told the user to run from
    # another directory
    from transferkit.data import load_domain
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels.csv").write_text("path,label\na.png,cat\n")
    for spec in ("labels.csv", "./labels.csv"):
        with pytest.raises(TransferkitError, match=r"is a file; a domain is a folder \(folder:PATH, one sub-folder of "
                                                   r"images per class\) or a numpy archive \(npz:PATH"):
            load_domain(spec)
    with pytest.raises(TransferkitError) as refused:
        load_domain("folder:labels.csv")
    assert "is a file, not a folder" in str(refused.value) and "current directory" not in str(refused.value)


def test_a_folder_one_level_too_high_warns_that_its_classes_became_groups(tmp_path):
    # before: pets/images/{cat,dog} was one class 'images' of two "videos", without a word
    from transferkit.userdata import load_image_folder
    for c in ("cat", "dog"):
        for i in range(2):
            image_file(tmp_path / "pets" / "images" / c / f"{i}.png", 60 + 40 * i)
    with pytest.warns(UserWarning, match=r"one class folder 'images', whose sub-folders cat, dog are read as groups "
                                         r"\(videos\) of that class; if they are the classes, give folder:.*images"):
        assert load_image_folder(tmp_path / "pets").class_names == ["images"]


def test_class_folders_that_differ_only_in_case_or_spaces_warn(tmp_path):
    from transferkit.userdata import load_image_folder
    for c in ("cat", "cat ", "Cat", "dog"):
        image_file(tmp_path / "cats" / c / "0.png", 120)
    with pytest.warns(UserWarning, match=r"the class folders 'Cat', 'cat', 'cat ' differ only in case or surrounding "
                                         r"spaces, and are read as 3 classes"):
        assert len(load_image_folder(tmp_path / "cats").class_names) == 4


def test_apply_shift_scales_uint8_and_refuses_unscaled_floats():
    # before: uint8 blur gave an all-white image and inversion values down to -253
    from transferkit.shifts import apply_shift
    pixels = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inverted = apply_shift("inversion", pixels, torch.Generator().manual_seed(0))
    assert torch.allclose(inverted, 1 - pixels.float() / 255)
    with pytest.raises(TransferkitError, match=r"shift 'blur': image values must lie in \[0, 1\]"):
        apply_shift("blur", pixels.float(), torch.Generator().manual_seed(0))


# -- the Python API's methods ----------------------------------------------------------------------

_TINY = {"steps": 2, "batch_size": 8}


def test_distill_takes_one_teacher_network_and_messages_show_a_network_by_name():
    # before: teacher=net failed with Python's "object of type 'UnitNet' has no len()" after the whole network printed
    from helpers import toy_domain

    from transferkit import Transfer
    from transferkit.backbones import build_backbone
    from transferkit.fitting import _short
    teacher = build_backbone("lenet", num_classes=4, in_channels=1, image_size=28)
    model = Transfer("distill", train=_TINY, teacher=teacher).fit(source=toy_domain(16, classes=4))
    assert len(model.method_.teacher) == 1
    assert repr(_short({"teacher": teacher, "temperature": 2})) == "{'teacher': <UnitNet 'lenet'>, 'temperature': 2}"


def test_captioned_unlabelled_images_need_the_classes_to_score():
    # before: CaptionedDomain(Domain.unlabeled(...)) gave a model of the one class '(unlabeled)', predicting 0 always
    from helpers import toy_domain

    from transferkit import Transfer
    from transferkit.clip import CaptionedDomain
    from transferkit.domain import Domain
    src = toy_domain(16, classes=4)
    pairs = CaptionedDomain(Domain.unlabeled("pairs", src.images), [f"a photo of digit {int(y)}" for y in src.labels])
    assert "classes" not in pairs.domain.provenance
    with pytest.raises(TransferkitError, match="does not name them: give class_names"):
        Transfer("clip", train=_TINY, text_encoder="hashing").fit(source=pairs)
    model = Transfer("clip", train=_TINY, text_encoder="hashing", class_names=list("0123")).fit(source=pairs)
    assert model.classes_ == list("0123") and model.method_.trained_classes is None


def test_unlabeled_images_a_method_never_reads_or_of_classes_nobody_has_warn():
    # before: clip with unlabeled= warned of classes "the source has no image of" (the captions, not the classes) and
    # never said it reads no unlabelled images; with target=, classes of neither the source nor the target passed
    import warnings

    from helpers import toy_domain

    from transferkit import Transfer
    from transferkit.clip import CaptionedDomain
    src = toy_domain(16, classes=4)
    pairs = CaptionedDomain(src, [f"a photo of digit {int(y)}" for y in src.labels])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Transfer("clip", train=_TINY, text_encoder="hashing").fit(source=pairs, unlabeled=toy_domain(8, classes=4))
    said = [str(w.message) for w in caught]
    assert "fit: unlabeled= is not used: method 'clip' reads no unlabelled images (it reads source)" in said
    assert not [m for m in said if "has no image of" in m]
    with pytest.warns(UserWarning, match=r"names classes that neither the source nor the target has \(\['4', '5', "
                                         r"'6', '7'\]\); the model predicts the target's classes only"):
        Transfer("dann", train=_TINY, pretrain=_TINY).fit(source=src, unlabeled=toy_domain(24, classes=8),
                                                          target=toy_domain(8, classes=4))


def test_a_network_without_an_input_shape_that_fails_on_the_images_is_named_before_training():
    # before: torch's "mat1 and mat2 shapes cannot be multiplied" / "expected input ... to have 1 channels" at the
    # first training step, naming neither the images nor the fix
    import torch.nn as nn

    from transferkit import Transfer
    from transferkit.adapters import from_sequential
    from transferkit.domain import Domain
    net = from_sequential(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                        nn.Linear(8 * 28 * 28, 3)))
    assert net.input_shape is None
    for images, torch_says in ((torch.rand(12, 1, 32, 32), "mat1 and mat2 shapes cannot be multiplied"),
                               (torch.rand(12, 3, 28, 28), "to have 1 channels, but got 3 channels")):
        with pytest.raises(TransferkitError, match=rf"fit: the network fails on the images of 't', of shape "
                                                   rf"\({images.shape[1]}, {images.shape[2]}, {images.shape[3]}\) "
                                                   rf"\(RuntimeError: .*{torch_says}.*\); the network declares no "
                                                   rf"input shape"):
            Transfer("finetune", train=_TINY).fit(target=Domain("t", images, torch.arange(12) % 3, list("abc")),
                                                  net=net)


@pytest.mark.parametrize("change, message", [
    (lambda d: setattr(d, "images", d.images * 255), r"image values must lie in \[0, 1\], found"),
    (lambda d: setattr(d, "images", (d.images * 255).to(torch.uint8)), r"its images are torch.uint8 of shape"),
    (lambda d: setattr(d, "labels", d.labels + 1), r"its labels go from 1 to 3 but it names 3 classes"),
    (lambda d: setattr(d, "class_names", ["a", "b"]), r"its labels go from 0 to 2 but it names 2 classes"),
])
def test_fit_refuses_domain_contents_replaced_after_the_domain_was_built(change, message):
    # before: 0-255 floats trained silently, uint8 raised torch's dtype error, labels beyond class_names got advice
    # about num_classes= that Transfer does not take
    from transferkit import Transfer
    from transferkit.domain import Domain
    target = Domain("t", torch.rand(12, 1, 28, 28), torch.arange(12) % 3, list("abc"))
    change(target)
    with pytest.raises(TransferkitError, match=rf"fit: the target domain 't': .*{message}.*changed after it was built"):
        Transfer("target_only", backbone="lenet", train=_TINY).fit(target=target)


def test_a_domain_keeps_a_copy_of_numpy_arrays_so_its_digest_stays_true():
    # before: an edit of the array in place reached the domain while its digest (memoised) did not change, so a
    # checkpoint or pre-training of the old data was reused
    import numpy as np

    from transferkit.domain import Domain
    x, y = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32), np.arange(6) % 2
    domain = Domain("s", x, y, ["a", "b"])
    digest, before = domain.digest(), domain.images.clone()
    x[:] = 0.5
    y[:] = 0
    assert torch.equal(domain.images, before) and domain.labels.tolist() == [0, 1] * 3
    assert domain.digest() == Domain("s", before, torch.tensor([0, 1] * 3), ["a", "b"]).digest() == digest


def test_saving_to_a_folder_or_checkpointing_into_a_file_is_named_before_any_work(tmp_path):
    # before: IsADirectoryError naming a hidden temporary file; NotADirectoryError at the first checkpoint, 100
    # pre-training steps in
    from helpers import toy_domain

    from transferkit import Transfer
    from transferkit.backbones import build_backbone
    from transferkit.networks import save_network
    (tmp_path / "models").mkdir()
    with pytest.raises(TransferkitError, match=r"cannot write '.*models': it is a folder; give the path of a file"):
        save_network(build_backbone("lenet", 3), tmp_path / "models")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TransferkitError, match=r"checkpoint_dir '.*notes.txt' is a file, not a folder"):
        Transfer("finetune", train=_TINY, pretrain=_TINY).fit(target=toy_domain(8, classes=2),
                                                              source=toy_domain(8, classes=2),
                                                              checkpoint_dir=tmp_path / "notes.txt")


def test_a_network_using_one_module_twice_in_a_unit_saves_and_loads(tmp_path):
    # before: safetensors' "Some tensors share memory", raised as an OSError of no errno (a disk problem)
    import torch.nn as nn

    from transferkit.adapters import from_sequential
    from transferkit.networks import load_network_file, save_network

    def build():  # the second unit runs one convolution twice
        inner = nn.Conv2d(4, 4, 3, padding=1)
        return from_sequential(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                             nn.Sequential(inner, nn.ReLU(), inner, nn.ReLU()),
                                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)),
                               units=[2, 1, 2], input_shape=(1, 8, 8))
    net, again = build(), build()
    save_network(net, tmp_path / "tied.safetensors")
    load_network_file(again, tmp_path / "tied.safetensors")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(again.eval()(x), net.eval()(x))


def test_a_validation_split_smaller_than_the_processes_is_named(monkeypatch):
    # before: `--nproc 3` with 2 validation images gave a rank an empty shard and an IndexError ("tuple index out of
    # range") as the job's failure
    from helpers import toy_domain

    import transferkit.engine as engine
    from transferkit.backbones import build_backbone
    from transferkit.config import TrainConfig
    from transferkit.methods.finetune import Finetune
    monkeypatch.setattr(engine, "world_size", lambda: 3)
    train, val = toy_domain(8, classes=2), toy_domain(2, classes=2)
    with pytest.raises(TransferkitError, match=r"the validation domain 'toy' has 2 image\(s\), fewer than the 3 "
                                               r"processes \(--nproc\).*raise val_per_class"):
        engine.Engine(TrainConfig(**_TINY)).fit(Finetune(build_backbone("lenet", 2)), target=train, val=val)


def test_a_refused_bench_resume_under_another_nproc_keeps_the_results_and_names_the_flag(tmp_path):
    # before: the results were cleared before the suite's run refused the resume, and the hint then left --nproc out
    import dataclasses

    from transferkit.bench import make_plan, run_benchmark
    from transferkit.io import write_json
    from transferkit.results import unfinished_hint
    bench = tmp_path / "bench"
    write_json(bench / "plan.json", {"benchmark": "demo", **dataclasses.asdict(make_plan("demo", True))})
    write_json(bench / "demo" / "jobs" / "finetune-k=2-s0.json", {"method": "finetune", "world_size": 2})
    write_json(bench / "results.json", {"config": {"benchmark": "demo"}, "rows": []})
    with pytest.raises(TransferkitError, match=r"finished jobs ran in 2 data-parallel process\(es\) and this resume "
                                               r"runs 1: .*resume with --nproc 2"):
        run_benchmark("demo", run_dir=bench, log=lambda *a, **k: None)
    assert (bench / "results.json").is_file()
    (bench / "results.json").unlink()
    assert f"`transferkit bench --nproc 2 demo --quick --resume {bench}`" in unfinished_hint(bench)


def test_a_checkpoint_of_another_process_count_is_refused_on_resume(tmp_path):
    # before: a job checkpointed under --nproc 2 went on under --nproc 1 without a word (its row then said 1)
    import json

    from helpers import Interrupt, crash_at, toy_domain

    from transferkit.backbones import build_backbone
    from transferkit.config import TrainConfig
    from transferkit.engine import Engine
    from transferkit.io import load_safetensors, save_safetensors
    from transferkit.methods.finetune import Finetune
    cfg = TrainConfig(steps=6, batch_size=8, eval_every=3, checkpoint_every=3)
    with pytest.raises(Interrupt):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path, hooks=(crash_at(4),)).fit(
            Finetune(build_backbone("lenet", 2)), target=toy_domain(8, classes=2))
    tensors, metadata = load_safetensors(tmp_path / "last.safetensors", "checkpoint")
    meta = json.loads(metadata["transferkit"])
    assert meta["world_size"] == 1
    save_safetensors(tmp_path / "last.safetensors", tensors, {"transferkit": json.dumps({**meta, "world_size": 2})})
    with pytest.raises(TransferkitError, match=r"was trained in 2 data-parallel process\(es\) and this resume runs 1: "
                                               r".*resume with --nproc 2"):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(Finetune(build_backbone("lenet", 2)),
                                                         target=toy_domain(8, classes=2))


def test_rows_of_several_process_counts_get_a_line_under_the_table():
    # before: two runs of one config under --nproc 5 and --nproc 1 were summarised side by side without a word
    from transferkit.tables import environment_lines
    rows = [{"run": "a", "method": "finetune", "seed": 0, "world_size": 5},
            {"run": "b", "method": "finetune", "seed": 0, "world_size": 1}]
    assert environment_lines(rows) == [
        "Rows made under 2 data-parallel process counts (--nproc) (5: a: finetune seed 0; 1: b: finetune seed 0): they "
        "may differ from one environment's rows (docs/scale.md)."]
    assert environment_lines([{**r, "world_size": 2} for r in rows]) == []


def test_a_results_file_whose_notes_are_one_text_shows_it_as_one_line(tmp_path, capsys):
    # before: a hand-written "notes": "some text" was printed one character per line
    from transferkit.io import write_json
    write_json(tmp_path / "results.json", {"config": {}, "notes": "made by hand",
                                           "rows": [{"method": "m", "source": "s", "target": "t", "setting": "k=1",
                                                     "seed": 0, "accuracy": 0.5, "wall_s": 1.0}]})
    code, out, err = run_cli(capsys, "summary", str(tmp_path))
    assert code == 0 and "\nmade by hand" in out and "\nm\n" not in out, err


def test_a_zero_shot_method_whose_target_classes_were_all_trained_on_warns():
    # before: attribute_zsl with target_classes 7-9 and the default source classes (all ten) gave a row that read
    # as zero-shot accuracy without a word
    from transferkit.backbones import build_backbone
    from transferkit.zeroshot import AttributeZeroShot
    method = AttributeZeroShot(build_backbone("lenet", 10))
    digits = [str(i) for i in range(10)]
    with pytest.warns(UserWarning, match=r"attribute_zsl: every target class \(\['7', '8', '9'\]\) is a source class "
                                         r"it trains on, so its accuracy is supervised, not zero-shot"):
        method.check_classes(digits, ["7", "8", "9"])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.check_classes(digits[:7], digits)  # seen and unseen classes (GZSL)
        method.check_classes(digits[:7], ["7", "8", "9"])


def test_zero_shot_report_names_labels_that_are_not_one_id_per_image():
    # before: N x 1 labels raised "TypeError: unhashable type: 'list'"
    from transferkit.zeroshot import zero_shot_report
    labels = torch.arange(5).repeat(4)
    with pytest.raises(TransferkitError, match=r"zero_shot_report labels must be a 1-D tensor of whole class ids, got "
                                               r"shape \(20, 1\)"):
        zero_shot_report(torch.randn(20, 5), labels[:, None], [0, 1, 2], [3, 4])
    assert 0 <= zero_shot_report(torch.randn(20, 5), labels, [0, 1, 2], [3, 4])["h"] <= 1


def test_an_unpickled_sentence_encoder_uses_the_cache_folder_of_the_process_that_loads_it(tmp_path, monkeypatch):
    # before: it kept the absolute cache path of the process that pickled it (another user's home, or a deleted
    # folder it then made again), ignoring TRANSFERKIT_CACHE; an unwritable cache raised a raw FileNotFoundError
    import pickle

    from transferkit import text

    class Model:
        def encode(self, texts, batch_size, **kw):
            return torch.stack([torch.tensor([float(len(t)), 1.0]) for t in texts])

        def get_sentence_embedding_dimension(self):
            return 2
    monkeypatch.setattr(text, "_load_sentence_model", lambda model, device: Model())
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "a"))
    encoder = text.SentenceEncoder("my-model")
    encoder.encode(["a cat"])
    pickled = pickle.dumps(encoder)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "b"))
    pickle.loads(pickled).encode(["a dog"])
    assert sorted(p.parent.parent.name for p in tmp_path.glob("*/text/my-model-*-single.pt")) == ["a", "b"]
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "file"))  # a file: its text/ folder cannot be made
    with pytest.warns(UserWarning, match=r"text embeddings of 'my-model' are not cached .*set TRANSFERKIT_CACHE"):
        pickle.loads(pickled).encode(["a cow"])


def test_a_rank_killed_by_a_signal_is_named_first_instead_of_the_others_lost_connection(tmp_path, monkeypatch,
                                                                                         capsys):
    # before: rank 0's "gloo ... Connection reset by peer" was the job's failure (exit 2, "fix the method"), and
    # torchrun's report of rank 1's SIGKILL was held back because rank 0 had left an error
    import subprocess

    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from transferkit import cli
    from transferkit.distributed import EXIT_DIR_ENV
    from transferkit.io import write_json
    lost = "1 of 2 job(s) failed: crash seed 0 (RuntimeError: gloo ... Connection reset by peer)"

    def failed(_):
        raise ChildFailedError("rank", {0: ProcessFailure(0, 1, 2, "/nonexistent"),
                                        1: ProcessFailure(1, 2, -9, "/nonexistent")})
    monkeypatch.setattr(torchrun, "parse_args", lambda argv: argv)
    monkeypatch.setattr(torchrun, "run", failed)

    class Child:  # torchrun's process: here its ranks' files, then _torchrun as torchrun would run it
        def __init__(self, cmd, env):
            self.env = env

    def wait(child):
        write_json(f"{child.env[EXIT_DIR_ENV]}/rank-0.json", {"code": 2, "error": lost})
        monkeypatch.setenv(EXIT_DIR_ENV, child.env[EXIT_DIR_ENV])
        return cli._torchrun([])
    monkeypatch.setattr(subprocess, "Popen", Child)
    monkeypatch.setattr(cli, "_wait_for_torchrun", wait)
    assert cli._relaunch_with_torchrun(2, ["run"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("transferkit: error: the process of rank 1 of --nproc was killed by SIGKILL (out of "
                             "memory?") and err[1] == f"transferkit: error: {lost}"


def test_a_resume_removes_what_a_stop_right_after_a_job_s_row_left(tmp_path, monkeypatch):
    # before: a stop between a job's row and the removal of its checkpoints left them (weights, optimiser and best
    # weights) for good, and a kill before a rename left its temporary file beside the finished row
    from transferkit import experiment
    from transferkit.config import ExperimentConfig, TrainConfig
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    tiny = TrainConfig(steps=2, eval_every=2, batch_size=8)
    cfg = ExperimentConfig(name="stop", source="digits", target="digits", k=2, repeats=1, backbone="lenet",
                           methods=["target_only"], pretrain=tiny, train=tiny, out_dir=str(tmp_path))
    run_dir, rows = experiment.run_experiment(cfg, log=lambda *a: None)
    (job,) = (run_dir / "jobs").glob("*.json")
    left = [run_dir / "checkpoints" / job.stem / "main" / "last.json", job.parent / f".{job.name}.x1y2z3.tmp",
            run_dir / "models" / f".{job.stem}.pt.a1b2c3.tmp"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    again, resumed = experiment.run_experiment(cfg, run_dir=run_dir, log=lambda *a: None)
    assert resumed == rows and not any(p.exists() for p in left) and not (run_dir / "checkpoints").exists()


# -- plugins and method options ------------------------------------------------------------------

@pytest.mark.parametrize("module, text, message", [
    ("tk_override_plugin", "from transferkit.methods.base import Method, register\n\n\n@register\n"
     "class Dann(Method):\n    name = 'dann'\n    streams = ('target',)\n",
     r"method name 'dann' is taken by transferkit.methods.adversarial.DANN"),
    ("tk_broken_plugin", "raise RuntimeError('broken plugin')\n",
     r"importing plugin module 'tk_broken_plugin' \(TRANSFERKIT_PLUGINS\) failed: RuntimeError: broken plugin"),
    ("tk_file_plugin.py", "", r"names 'tk_file_plugin.py': give the module's name, 'tk_file_plugin', not a file name"),
])
def test_a_run_imports_its_plugins_whatever_its_config_names(tmp_path, monkeypatch, module, text, message):
    # before: plugins were imported only for an unknown name, so a run of built-in methods finished with a plugin
    # that overrode 'dann' ignored, or one that failed to import, and recorded it in environment.plugins
    from transferkit.config import ExperimentConfig
    from transferkit.preflight import check_names
    (tmp_path / (module.removesuffix(".py") + ".py")).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", module)
    with pytest.raises(TransferkitError, match=message):
        check_names(ExperimentConfig(methods=["finetune"]))


@pytest.mark.parametrize("option, message", [
    ("lr_schedule=None", r"must be one of constant, cosine, dann, null, got 'None' \(YAML's null is `null` or `~`"),
    ("lr=None", r"must be a finite number > 0, got 'None' \(YAML's null is `null` or `~`"),
])
def test_none_written_in_yaml_is_told_to_be_null(option, message):
    # before: "option lr_schedule must be one of constant, cosine, dann, None, got 'None'"
    from transferkit.config import load_config
    from transferkit.preflight import check_names
    with pytest.raises(TransferkitError, match=message):
        check_names(load_config(None, ["methods=[dann]", f"options.dann.{option}"]))


@pytest.mark.parametrize("name", ["lext", "finetune_adv"])
def test_layers_with_the_head_and_other_class_counts_are_refused_before_pretraining(name):
    # before: refused in prepare, when the job ran: after pre-training and the jobs of methods listed before it
    from transferkit.backbones import build_backbone
    from transferkit.methods import get_method
    method = get_method(name)(build_backbone("lenet", 5), layers=["fc1", "head"])
    with pytest.raises(TransferkitError, match=r"layers may include 'head' only when source and target have as many "
                                               r"classes .*here 5 and 3"):
        method.check_classes(list("abcde"), list("xyz"))
    method.check_classes(list("abcde"), list("vwxyz"))
    get_method(name)(build_backbone("lenet", 5)).check_classes(list("abcde"), list("xyz"))  # default layers


def test_embedding_zsl_refuses_templates_it_would_ignore():
    # before: templates (a typo included) were accepted and recorded in the row's method_options, and never used
    from transferkit.backbones import build_backbone
    from transferkit.zeroshot import EmbeddingZeroShot
    with pytest.raises(TransferkitError, match=r"embedding_zsl: templates 'digit' fill prompts with class names for "
                                               r"class_embeddings text or text:ENCODER; .* are not text"):
        EmbeddingZeroShot(build_backbone("lenet", 10), templates="digit")
    names = [str(i) for i in range(10)]
    assert EmbeddingZeroShot(build_backbone("lenet", 10), class_embeddings="text:hashing", class_names=names,
                             templates="digits").class_embeddings.shape[0] == 10


def test_matching_ft_refuses_a_batch_of_one_image():
    # before: every step's loss was 0 (no class twice in a batch) and the untrained head was scored, silently
    from helpers import toy_domain

    from transferkit import Transfer
    with pytest.raises(TransferkitError, match=r"matching_ft matches a query .* a batch of 1 image never holds an "
                                               r"episode .*train.batch_size >= 2"):
        Transfer("matching_ft", train={"steps": 2, "batch_size": 1}, pretrain=_TINY).fit(
            target=toy_domain(8, classes=2), source=toy_domain(8, classes=2))


def test_a_misspelt_hashing_encoder_and_a_nameless_plugin_method_are_named():
    # before: 'hash' was read as a model to download ("needs sentence-transformers: pip install ..."); a method class
    # without a name of its own registered as its parent's 'method'
    from transferkit.methods.base import Method, register
    from transferkit.text import get_text_encoder
    for name in ("hash", "Hashing"):
        with pytest.raises(TransferkitError, match=rf"text encoder '{name}': did you mean 'hashing'"):
            get_text_encoder(name)
    with pytest.raises(TransferkitError, match=r"Nameless sets no name of its own \(it would register as its parent's "
                                               r"'method'\): set name = '...'"):
        @register
        class Nameless(Method):
            streams = ("target",)


def test_workers_in_a_config_and_nproc_are_refused_as_the_flags_are(tmp_path, capsys, monkeypatch):
    # before: `--workers 2 --nproc 2` was refused, but workers: 2 in the config (or --set workers=2) was ignored
    import transferkit.cli as cli
    monkeypatch.setattr(cli, "_relaunch_with_torchrun", lambda *a: pytest.fail("processes started"))
    code, _, err = run_cli(capsys, "run", "--nproc", "2", "--set", "workers=2", "--set", f"out_dir={tmp_path}")
    assert code == 2 and "workers 2 (the config's workers: key, --set workers= or TRANSFERKIT_WORKERS) and --nproc 2 " \
                         "do not combine" in err, err
