"""Determinism audit: a fixed seed gives bit-identical rows and weights after an interruption
inside jobs, after another model's fit in the same process, and for data built in other
processes (any PYTHONHASHSEED, any build order)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import transferkit.api as api
from transferkit import Transfer, load_domain
from transferkit.config import ExperimentConfig
from transferkit.engine import Engine, TrainConfig
from transferkit.experiment import run_experiment
from transferkit.splits import sample_k_shot, split_domain


def _config(out, **kw):
    return ExperimentConfig(**{**dict(name="det", source="digits", target="digits+noise", backbone="lenet", k=3,
                                      repeats=1, val_per_class=2, methods=["target_only", "dann", "flex"],
                                      out_dir=str(out), pretrain=TrainConfig(steps=20, eval_every=10),
                                      train=TrainConfig(steps=20, eval_every=5, checkpoint_every=5)), **kw})


def _weights(run_dir):
    files = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*.safetensors") if "checkpoints" not in p.parts)
    return {str(f): load_file(run_dir / f) for f in files}


def test_a_run_stopped_inside_two_jobs_resumes_to_the_rows_and_weights_of_an_uninterrupted_one(tmp_path,
                                                                                             monkeypatch):
    quiet = lambda *a: None  # noqa: E731
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache_full"))
    full_dir, full = run_experiment(_config(tmp_path / "full"), log=quiet)

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache_cut"))  # its own source network too
    save, load, loaded = Engine._save, Engine._load, []
    stops = {("dann", 10), ("flex", 15)}  # inside dann's training, then inside one of flex's unit trainings

    def save_then_stop(self, method, opt, state, *rest):
        save(self, method, opt, state, *rest)
        key = (self.run_name.split("-")[0], state["step"])
        if key in stops:
            stops.discard(key)
            raise KeyboardInterrupt  # as Ctrl-C right after that checkpoint

    def recorded_load(self, *args):
        loaded.append(self.run_name)
        return load(self, *args)

    monkeypatch.setattr(Engine, "_save", save_then_stop)
    monkeypatch.setattr(Engine, "_load", recorded_load)
    run_dir = tmp_path / "cut" / "det" / "fixed"
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            run_experiment(_config(tmp_path / "cut"), run_dir=run_dir, log=quiet)
    _, resumed = run_experiment(_config(tmp_path / "cut"), run_dir=run_dir, log=quiet)
    assert not stops and any(r.startswith("dann") for r in loaded) and any(r.startswith("flex") for r in loaded)
    kept = ("method", "accuracy", "confusion", "val_accuracy", "best_step", "steps", "source_digest")
    by_method = lambda rows: {r["method"]: {k: r.get(k) for k in kept} for r in rows}  # noqa: E731
    assert by_method(resumed) == by_method(full)
    a, b = _weights(full_dir), _weights(run_dir)
    assert a.keys() == b.keys() and len(a) >= 4  # each job's network and the source network
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name


def _logits(method, few, src, test, **options):
    model = Transfer(method, backbone="lenet", seed=3, pretrain=TrainConfig(steps=15, eval_every=5),
                     train=TrainConfig(steps=8, eval_every=4, batch_size=16), **options)
    unlabeled = test if "unlabeled" in model.method_cls.streams else None
    return model.fit(target=few, source=src, unlabeled=unlabeled).predict_logits(test.images)


def test_a_fit_after_other_fits_in_the_process_predicts_as_one_fitted_alone():
    src = load_domain("digits")
    tgt = split_domain(load_domain("digits+noise"))
    few, _ = sample_k_shot(tgt.train, k=3, seed=0)
    test = tgt.test
    torch.manual_seed(11)  # the caller's state, moved by nothing but the fits' own draws (none leak)
    after = {m: _logits(m, few, src, test) for m in ("finetune", "tap", "matching_ft", "dann")}
    torch.manual_seed(99)
    api.PRETRAINED.clear()  # as a new process: the pre-training is done again, not read from the memo
    alone = _logits("finetune", few, src, test)
    assert torch.equal(after["finetune"], alone)
    api.PRETRAINED.clear()
    assert torch.equal(_logits("dann", few, src, test), after["dann"])
    assert not torch.equal(after["finetune"], after["dann"])  # the comparison can tell two models apart


DATA_PRINT = '''
import hashlib, json, sys, torch
from transferkit.data import load_domain
from transferkit.fewshot_eval import sample_episodes
from transferkit.splits import sample_k_shot, split_domain, subsample_per_class
def h(*ts):
    m = hashlib.sha256()
    for t in ts:
        m.update(t.contiguous().numpy().tobytes())
    return m.hexdigest()[:16]
out = {}
for spec in sys.argv[1].split(","):
    d = load_domain(spec, seed=3)
    parts = split_domain(d)
    few, _ = sample_k_shot(parts.train, k=3, seed=7)
    sub = subsample_per_class(parts.train, 5, seed=2)
    episodes = sample_episodes(parts.test.labels, 5, 1, 3, 4, torch.Generator().manual_seed(0))
    kept = d.select_classes(list(d.class_names)[3:7])
    out[spec] = [h(d.images, d.labels), list(d.class_names), h(parts.train.labels, parts.val.images),
                 h(few.images, few.labels), h(sub.images, sub.labels), h(*episodes), h(kept.images, kept.labels)]
print(json.dumps(out, sort_keys=True))
'''


def test_data_builds_are_the_same_in_every_process_hash_seed_and_build_order(tmp_path):
    script = tmp_path / "print_data.py"
    script.write_text(DATA_PRINT)
    specs = ["digits+noise+occlusion", "syndigits+affine_random", "digits+rotation+scaling"]
    printed = set()
    for i, (hash_seed, order) in enumerate([(1, specs), (2, specs[::-1])]):
        env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "OMP_NUM_THREADS": "1",
               "TRANSFERKIT_CACHE": str(tmp_path / f"cache{i}")}  # each process builds every domain anew
        out = subprocess.run([sys.executable, str(script), ",".join(order)], capture_output=True, text=True,
                             env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        printed.add(out.stdout)
    assert len(printed) == 1, printed
    assert len(json.loads(printed.pop())) == 3


def test_callers_numpy_random_state_is_given_back_after_transferkits_work():
    """The SKADA side-by-side seeds NumPy's global generator (``run_skada``): a benchmark or a fit
    gives the caller's NumPy state back, as it gives torch's."""
    import numpy as np

    from transferkit.runtime import callers_state_kept

    np.random.seed(123)
    expected = np.random.get_state()[1].copy()
    with callers_state_kept():
        np.random.seed(7)
        np.random.rand(5)
    assert np.array_equal(np.random.get_state()[1], expected)
