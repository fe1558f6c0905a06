"""Tests from a mutation pass over zeroshot, clip and text (attribute / embedding zero-shot,
GZSL calibration, the CLIP dual encoder and its losses, the hashing text encoder).

Each test kills at least one mutation that survived tests/test_zeroshot.py and
tests/test_clip.py; expected values are written out from the documented equations in plain
torch on tiny tensors, never taken from the library's current outputs.
"""

import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_net

from transferkit.clip import (
    DOMAIN_TEMPLATES,
    ClipMethod,
    LearnableTemperature,
    info_nce,
    make_captions,
    retrieval_report,
)
from transferkit.data import FONT_FACES
from transferkit.domain import Domain
from transferkit.engine import Batch
from transferkit.errors import TransferkitError
from transferkit.text import HashingEncoder
from transferkit.zeroshot import (
    DIGIT_ATTRIBUTES,
    AttributeZeroShot,
    EmbeddingZeroShot,
    digit_attributes,
    evaluate_zero_shot,
    zero_shot_report,
)

# ---- zeroshot ------------------------------------------------------------------------------


def test_gzsl_report_refuses_stray_labels_and_a_label_count_that_is_not_the_score_rows():
    scores = torch.zeros(4, 5)
    with pytest.raises(TransferkitError, match=r"labels \[4\] are neither seen nor unseen classes"):
        zero_shot_report(scores, torch.tensor([0, 2, 4, 3]), [0, 1], [2, 3])
    with pytest.raises(TransferkitError, match="4 score rows for 3 labels"):
        zero_shot_report(scores, torch.tensor([0, 2, 3]), [0, 1], [2, 3])


def test_evaluate_zero_shot_refuses_a_boolean_gamma():
    method = AttributeZeroShot(tiny_net(10), "strokes")
    dom = Domain("d", torch.rand(10, 1, 28, 28), torch.arange(10), [str(i) for i in range(10)])
    for gamma in (True, False):
        with pytest.raises(TransferkitError, match=f"gamma must be a number or 'prior', got {gamma}"):
            evaluate_zero_shot(method, dom, list(range(7)), [7, 8, 9], gamma=gamma)


def test_combined_digit_attribute_sets_are_concatenated_per_class(monkeypatch):
    import transferkit.zeroshot as zs
    zones = torch.arange(90.0).view(10, 9) / 90  # stands for the rendered glyph zones (slow to render)
    monkeypatch.setattr(zs, "glyph_zone_attributes", lambda: zones)
    both = digit_attributes("strokes+zones")
    assert both.shape == (10, 17)
    assert torch.equal(both, torch.cat([DIGIT_ATTRIBUTES, zones], 1))
    assert torch.equal(digit_attributes("zones+strokes")[:, :9], zones)


def test_attribute_loss_is_the_binary_cross_entropy_of_the_sigmoid_predictions():
    torch.manual_seed(0)
    a = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0], [0.5, 0.5, 0.0]])
    m = AttributeZeroShot(tiny_net(3), attributes=a)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        p = torch.sigmoid(m.attribute_logits(x))
        t = a[y]
        expected = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
        loss = m.losses(Batch(step=0, progress=0.0, source=(x, y)))["bce_attributes"]
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_embedding_loss_is_cross_entropy_over_the_seen_candidate_classes_only():
    torch.manual_seed(0)
    e = torch.eye(5)
    m = EmbeddingZeroShot(tiny_net(3), class_embeddings=e, dim=8)
    seen = Domain("seen", torch.rand(6, 1, 28, 28), torch.arange(6) % 3, ["0", "1", "2"])
    m.prepare({"source": seen})  # trained on the seen classes 0-2 of the 5 described
    x, y = seen.images, seen.labels
    with torch.no_grad():
        s = m.class_scores(x)[:, :3]  # the unseen columns 3, 4 are out of the softmax
        expected = (torch.logsumexp(s, 1) - s.gather(1, y[:, None])[:, 0]).mean()
        loss = m.losses(Batch(step=0, progress=0.0, source=(x, y)))["ce_source"]
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


# ---- clip ----------------------------------------------------------------------------------


def test_temperature_is_clamped_below_at_scale_one():
    t = LearnableTemperature(tau0=0.07)
    with torch.no_grad():
        t.log_scale.fill_(-3.0)
    assert float(t().detach()) == pytest.approx(1.0)  # 1 / tau never below 1
    t.clamp_()
    assert float(t.log_scale.detach()) == 0.0
    assert float(LearnableTemperature(tau0=1.0).log_scale.detach()) == 0.0  # the ends of the range are taken
    assert float(LearnableTemperature(tau0=0.01)().detach()) == pytest.approx(100.0)
    for tau0, start in ((2.0, "1"), (100, "1"), (0.001, "100")):  # were clamped silently (tau0=100 -> scale 1)
        with pytest.raises(TransferkitError, match=rf"tau0 = {tau0} is outside \[0.01, 1\].*start at {start}, not"):
            LearnableTemperature(tau0=tau0)
    with pytest.raises(TransferkitError, match="max_scale >= 1"):
        LearnableTemperature(tau0=0.07, max_scale=0.5)


def test_projected_text_features_are_unit_norm():
    torch.manual_seed(0)
    m = ClipMethod(tiny_net(10), captions=["a", "b"], text_encoder=HashingEncoder(16))
    with torch.no_grad():
        m.text_proj.weight.mul_(7.0)  # whatever the projection's scale
        t = m.encode_texts(["a handwritten seven", "a printed 7", "zero"])
    assert torch.allclose(t.norm(dim=1), torch.ones(3), atol=1e-6)


def test_clip_refuses_a_caption_id_equal_to_the_number_of_captions():
    m = ClipMethod(tiny_net(10), captions=["a", "b"], text_encoder=HashingEncoder(16))
    src = Domain("s", torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2]), ["a", "b", "c"])
    with pytest.raises(TransferkitError, match=r"3 source classes, 2 captions"):
        m.prepare({"source": src})


def test_clip_infonce_counts_images_sharing_a_caption_as_positives():
    torch.manual_seed(0)
    m = ClipMethod(tiny_net(10), captions=["a", "b"], text_encoder=HashingEncoder(16))
    x, ids = torch.rand(4, 1, 28, 28), torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        sim = m.encode_images_from_input(x) @ m.encode_text_features(m.caption_features[ids]).t()
        logits = m.temperature() * sim
        pos = ids[:, None] == ids[None, :]
        rows = torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~pos, float("-inf")), 1)
        cols = torch.logsumexp(logits, 0) - torch.logsumexp(logits.masked_fill(~pos, float("-inf")), 0)
        expected = 0.5 * (rows.mean() + cols.mean())
        loss = m.losses(Batch(step=0, progress=0.0, source=(x, ids)))["infonce"]
        one_positive_each = info_nce(sim, m.temperature())
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss) != pytest.approx(float(one_positive_each), rel=1e-3)


def test_caption_templates_are_picked_by_the_hash_of_seed_and_index():
    dom = Domain("mnist", torch.zeros(12, 1, 28, 28), torch.full((12,), 7), [str(i) for i in range(10)],
                 provenance={"base": "mnist"})
    templates = DOMAIN_TEMPLATES["mnist"]
    for seed in (0, 3):
        expected = [templates[zlib.crc32(f"{seed}:{i}".encode()) % len(templates)].format(w="seven", d="7")
                    for i in range(12)]
        assert make_captions(dom, seed=seed) == expected
    assert make_captions(dom, seed=0) != make_captions(dom, seed=3)


def test_make_captions_refuses_a_font_id_past_the_last_face():
    dom = Domain("syn", torch.zeros(1, 1, 28, 28), torch.tensor([3]), [str(i) for i in range(10)])
    with pytest.raises(TransferkitError, match=r"font ids must lie in \[0, "):
        make_captions(dom, kind="syndigits", styles={"font": [len(FONT_FACES)], "photo": [False]})


def test_retrieval_text_to_image_ranks_images_for_each_caption():
    class Texts:  # a fixed text tower: caption embeddings chosen by hand
        def encode_texts(self, captions):
            return torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # image classes 0, 1, 0
    # sim = [[1, 0], [.6, .8], [0, 1]]; caption classes 0, 1
    # i2t R@1: image 0 -> caption 0 (class 0, hit), image 1 -> caption 1 (hit), image 2 -> caption 1 (miss)
    # t2i R@1: caption 0 -> image 0 (hit), caption 1 -> image 2 (class 0, miss)
    r = retrieval_report(Texts(), None, torch.tensor([0, 1, 0]), ["c0", "c1"], torch.tensor([0, 1]), ks=(1, 2),
                         image_embeddings=img)
    assert r["i2t_R@1"] == pytest.approx(2 / 3) and r["t2i_R@1"] == 0.5
    assert r["t2i_R@2"] == 1.0  # caption 1: image 1 ranked 2nd


def test_clip_refuses_validation_classes_it_scores_at_an_earlier_position():
    m = ClipMethod(tiny_net(10), captions=["a"], class_names=["7", "8", "9"], text_encoder=HashingEncoder(16))
    val = Domain("v", torch.rand(4, 1, 28, 28), torch.arange(4) % 2, ["x", "7"])  # label 1 is clip's column 0
    with pytest.raises(TransferkitError, match="early stopping would compare labels of one list"):
        m.check_validation(val)


# ---- text ----------------------------------------------------------------------------------


def test_hashing_encoder_known_vector_of_words_and_trigrams():
    dim = 4096
    enc = HashingEncoder(dim)
    expected = torch.zeros(dim)
    for g in ("ab", "cde", "#ab", "ab#", "#cd", "cde", "de#"):  # the words, then the trigrams of "#word#"
        h = zlib.crc32(g.encode())
        expected[h % dim] += 1.0 if (h >> 16) & 1 else -1.0
    assert torch.allclose(enc.encode(["Ab CDE!"])[0], F.normalize(expected, dim=0))
    assert torch.equal(enc.encode(["ab cde"]), enc.encode(["AB cde"]))  # lower-cased


def test_encoders_return_unit_rows_also_for_texts_without_words():
    enc = HashingEncoder(32)
    e = enc.encode(["", "!!!", "a handwritten seven and a printed seven"])
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-6)
    assert torch.equal(e[0], torch.eye(32)[0])  # no word: the first unit vector


def test_hashing_dim_from_name_and_class_words_of_multi_digit_names():
    from transferkit.text import class_words, get_text_encoder, prompt_texts
    assert get_text_encoder("hashing:1").encode(["x"]).shape == (1, 1)
    assert class_words("12") == ["12"] and class_words("7") == ["7", "seven"]
    # a digit is one digit character, as make_captions words it: "07" is named as written
    assert class_words("07") == ["07"]
    assert prompt_texts(["10"], templates=("a {}",)) == [["a 10"]]
    assert math.isclose(float(get_text_encoder("hashing:8").encode(["a"]).norm()), 1.0, rel_tol=1e-6)


def test_mean_class_accuracy_averages_exact_per_class_fractions():
    from transferkit.zeroshot import mean_class_accuracy
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    pred = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 0, 0])  # class 0: 1 of 3, class 1: 5 of 7
    assert mean_class_accuracy(pred, labels, [0, 1]) == (1 / 3 + 5 / 7) / 2  # float32 means were off by ~1e-8
    assert mean_class_accuracy(pred, labels, [0, 1, 2]) == (1 / 3 + 5 / 7) / 2  # a class without samples is left out
