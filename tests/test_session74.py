"""Tests of stop 74's fixes; each fails on the library before its fix."""
import torch
from helpers import tiny_net
from test_zeroshot import _toy_domain

from transferkit.zeroshot import MASKED, EmbeddingZeroShot


def test_non_candidate_classes_are_masked_below_scores_under_the_mask_value():
    """A candidate's score below -1e9 (an unbounded dot product) still wins over the masked classes."""
    a, dom = _toy_domain()
    method = EmbeddingZeroShot(tiny_net(3), class_embeddings=a, dim=8).eval()
    method.set_candidates([3, 4])
    low = torch.full((4, 5), -5e9)
    low[:, 3] = -4e9
    method.class_scores = lambda x: low[:len(x)]
    out = method.forward_from_input(dom.images[:4])
    assert out.argmax(1).tolist() == [3, 3, 3, 3]
    assert bool(torch.isfinite(out).all())
    usual = torch.randn(4, 5)
    method.class_scores = lambda x: usual[:len(x)]
    out = method.forward_from_input(dom.images[:4])
    assert bool((out[:, [0, 1, 2]] == MASKED).all()) and torch.equal(out[:, 3:], usual[:, 3:])


def test_a_write_error_names_its_file_once(tmp_path, monkeypatch):
    # before: `[Errno 28] No space left on device (writing '.../r.json'): '.../r.json'`
    import errno

    import pytest

    from transferkit import io
    with pytest.raises(OSError) as info:
        with io.atomic_path(tmp_path / "r.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value).count("r.json") == 1 and io.failed_writing(info.value)
    assert str(info.value) == f"[Errno 28] No space left on device while writing: {str(tmp_path / 'r.json')!r}"

    def refuse(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".r.json.x.tmp"))
    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as info:
        io.write_text(tmp_path / "r.json", "x")
    assert str(info.value).count("r.json") == 1 and info.value.filename == str(tmp_path) and \
        io.failed_writing(info.value)


def test_scoring_chunks_hold_fewer_rows_of_large_images():
    # before: 1,024 rows per chunk whatever the image size (224-px colour images: GBs of activations a chunk)
    from transferkit.evaluate import CHUNK_VALUES, chunk_rows, predict_logits
    assert chunk_rows(torch.zeros(5, 3, 32, 32)) == 1024 and chunk_rows(torch.zeros(5, 1, 28, 28)) == 1024
    assert chunk_rows(torch.zeros(5, 3, 224, 224)) == CHUNK_VALUES // (3 * 224 * 224) == 20
    assert chunk_rows(torch.zeros(5, 3, 64, 64), most=256) == 256 and chunk_rows(torch.zeros(2, 3, 4096, 4096)) == 1
    seen = []
    out = predict_logits(lambda x: seen.append(len(x)) or x.flatten(1)[:, :2], torch.rand(45, 3, 224, 224))
    assert seen == [20, 20, 5] and out.shape == (45, 2)


def test_stored_activations_are_run_in_the_chunks_of_their_images(monkeypatch):
    # a pass over stored activations (larger per row than the images) keeps the images' chunk boundaries
    from transferkit import evaluate, frozen
    from transferkit.backbones import build_backbone
    net = build_backbone("lenet", 10, in_channels=1, image_size=28).eval()
    images = torch.rand(50, 1, 28, 28)
    monkeypatch.setattr(evaluate, "CHUNK_VALUES", 20 * 28 * 28)  # 20 images a chunk; 20 x 12 x 12 per activation
    frozen.MEMO.clear()
    seen = []
    first = frozen.frozen_activations(net, images, "conv2", then=lambda h: seen.append(len(h)) or h.flatten(1))
    again = frozen.frozen_activations(net, images, "conv2", then=lambda h: seen.append(len(h)) or h.flatten(1))
    assert seen == [20, 20, 10, 20, 20, 10] and torch.equal(first, again)
    frozen.MEMO.clear()


def test_the_engine_scores_validation_activations_in_the_chunks_of_their_images(monkeypatch):
    from transferkit import engine, evaluate
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.engine import Engine, TrainConfig
    from transferkit.methods.finetune import FtFc
    monkeypatch.setattr(evaluate, "CHUNK_VALUES", 20 * 28 * 28)  # 20 images a chunk
    calls = []
    real = engine.predict_logits
    monkeypatch.setattr(engine, "predict_logits", lambda f, x, rows=None, **kw: calls.append((x.shape[1:], rows))
                        or real(f, x, rows, **kw))
    torch.manual_seed(0)
    dom = Domain("toy", torch.rand(60, 1, 28, 28), torch.arange(60) % 3, ["a", "b", "c"])
    Engine(TrainConfig(steps=2, batch_size=8, eval_every=2, progress=False)).fit(
        FtFc(build_backbone("lenet", 3, in_channels=1, image_size=28)), target=dom, val=dom)
    assert calls and all(rows == 20 for _, rows in calls) and calls[0][0] != (1, 28, 28)  # activations, image rows


# ---- the scikit-learn surface (audit sk) -------------------------------------------------------------------------
def _fitted_toy():
    import numpy as np

    from transferkit.api import Transfer
    from transferkit.domain import Domain
    from transferkit.engine import TrainConfig
    x = np.random.default_rng(0).random((40, 1, 28, 28)).astype(np.float32)
    y = np.arange(40) % 4
    model = Transfer("target_only", train=TrainConfig(steps=2, batch_size=8, eval_every=1, progress=False))
    return model.fit(target=Domain("toy", x, y, list("abcd"))), x, y


def test_scikit_learn_scores_and_checks_a_fitted_model(one_thread):
    # before: every scikit-learn helper (scorers, check_is_fitted, ConfusionMatrixDisplay, a predicting Pipeline)
    # stopped with "Transfer.fit takes Domain objects ... cannot fit it", fitted or not
    import numpy as np
    import pytest
    from sklearn.base import is_classifier
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.utils.validation import check_is_fitted

    from transferkit.api import Transfer
    from transferkit.errors import TransferkitError
    model, x, y = _fitted_toy()
    check_is_fitted(model)
    assert is_classifier(model)
    assert get_scorer("accuracy")(model, x, y) == model.score(x, y)
    pipe = make_pipeline(FunctionTransformer(lambda a: a.reshape(-1, 1, 28, 28)), model)
    assert np.array_equal(np.asarray(pipe.predict(x.reshape(40, -1))), model.predict(x).numpy())
    with pytest.raises(TransferkitError, match="cannot fit it"):  # fitting by scikit-learn is still refused
        cross_val_score(model, x, y, cv=2)
    with pytest.raises(TransferkitError, match="cannot fit it"):
        is_classifier(Transfer("target_only"))


def test_score_takes_sample_weights(one_thread):
    import numpy as np
    import pytest

    from transferkit.domain import Domain
    from transferkit.errors import TransferkitError
    model, x, y = _fitted_toy()
    right = (model.predict(x).numpy() == y).astype(float)
    w = np.linspace(0.0, 2.0, 40)
    assert model.score(x, y, sample_weight=w) == pytest.approx((w * right).sum() / w.sum())
    assert model.score(x, y, sample_weight=np.ones(40)) == pytest.approx(model.score(x, y))
    dom = Domain("toy", x, y, list("abcd"))
    assert model.score(dom, sample_weight=w) == pytest.approx((w * right).sum() / w.sum())
    for bad, message in ((np.ones(39), r"one weight per image \(40\)"), (-w, "non-negative"),
                         (np.zeros(40), "not all zero"), (np.full(40, np.inf), "finite")):
        with pytest.raises(TransferkitError, match=message):
            model.score(x, y, sample_weight=bad)


def test_set_params_of_nothing_keeps_the_fit_and_a_new_method_keeping_options_warns(one_thread):
    import pytest

    from transferkit.api import Transfer
    from transferkit.errors import TransferkitWarning
    model, x, _ = _fitted_toy()
    assert model.set_params() is model and hasattr(model, "net_")  # before: the fit was dropped
    with pytest.warns(TransferkitWarning, match=r"set_params: weight=0\.5, set for 'dann', the method before, now go "
                                                r"to 'mmd'"):
        changed = Transfer("dann", weight=0.5).set_params(method="mmd")
    assert changed.options == {"weight": 0.5}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferkitWarning)
        Transfer("dann", weight=0.5).set_params(method="mmd", weight=1.0)  # given again: said so
        Transfer("dann", weight=0.5).set_params(seed=3)
