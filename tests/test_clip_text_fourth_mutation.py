"""Tests from a fourth mutation pass over clip.py and text.py, beyond tests/test_zeroshot_mutation.py,
tests/test_clip_text_mutation.py and tests/test_clip_semantic_third_mutation.py: the Computer Modern
roman face worded as serif; make_captions' styles without a ``photo`` entry or with one of another
length, the plain background worded, an unknown caption kind refused by name; the captions file's
missing ``file_name`` column named with the columns it has, a file that is not UTF-8, a file name that
is no text, captions kept in NFC; check_captions_file's "..." after three stray names and its
refusal of a source without file names; ClipMethod's upper bound of triplet_warmup, the classes of a
source of selected classes, an empty captions option refused; retrieval_report using the embeddings
it is given; a sentence model that fails to download for another reason than OSError, the newer
sentence-transformers' dimension method, an unpickled encoder loading its model again, and the
torch version in the disk cache's digest. Each test fails when the code its comment names is
changed in the way it says.

Judged equivalent, so not tested: captions_for_classes' ``len(captions) > 1`` of the order warning
(one class name is always in order); ClipMethod.prepare's ``n > 0`` (with a source, ``needed >= 1``
and ``needed <= n`` imply it); _video_of's ``rsplit("/", 1)[0]`` for a name with one slash (its class
folder, never an image's or a video's key); check_distinct's ``<=`` -> ``<`` (the tolerance is
never 0); captioned_source's ``grouped`` (judged so by the third pass). Left surviving: none of the
mutants made."""

import pickle
import sys
import types
import unicodedata
import warnings

import pytest
import torch
import torch.nn as nn
from test_clip_semantic_third_mutation import _keyed
from test_clip_text_mutation import _clip, _digits

from transferkit.clip import (
    ClipMethod,
    _face_style,
    check_captions_file,
    make_captions,
    read_captions_file,
    retrieval_report,
)
from transferkit.errors import TransferkitError

# ---- captions --------------------------------------------------------------------------------


def test_computer_modern_roman_is_a_serif_face():
    # kills: clip.py:_face_style: dropping "cmr" from the serif prefixes
    assert _face_style("cmr10") == "serif"
    assert _face_style("cmss10") == "sans-serif"


def test_make_captions_refuses_styles_without_photo_flags_or_with_another_number_of_them():
    # kills: clip.py:make_captions: dropping `key in styles` (a KeyError); checking the font entry only
    dom = _digits([0, 1, 2])
    with pytest.raises(TransferkitError, match="photo"):
        make_captions(dom, "syndigits", {"font": [0, 1, 2]})
    for photo in ([0, 1], [0, 1, 0, 1]):
        with pytest.raises(TransferkitError, match=r"styles\['photo'\] must hold one entry per image \(3\)"):
            make_captions(dom, "syndigits", {"font": [0, 1, 2], "photo": photo})


def test_syndigits_captions_of_plain_images_name_the_plain_background():
    # kills: clip.py:make_captions: the plain background worded as nothing
    dom = _digits(torch.arange(12) % 10)
    caps = make_captions(dom, "syndigits", {"font": [0] * 12, "photo": [0] * 12})
    assert any(c.endswith(" on a plain background") for c in caps)
    assert not any("photo" in c for c in caps)


def test_an_unknown_caption_kind_is_refused_by_name():
    # kills: clip.py:make_captions: dropping the kind check (a bare KeyError)
    with pytest.raises(TransferkitError, match="caption domain kind 'svhn'"):
        make_captions(_digits([0, 1]), "svhn")


# ---- captions files --------------------------------------------------------------------------


def test_a_csv_without_a_file_name_column_names_its_columns(tmp_path):
    # kills: clip.py:read_captions_file: dropping "file_name" from the column check (then "line 2 has no file_name")
    (tmp_path / "c.csv").write_text("name,text\ncat/1.png,a cat\n")
    with pytest.raises(TransferkitError, match=r"has the columns \['name', 'text'\]: it needs file_name"):
        read_captions_file(tmp_path / "c.csv")


def test_a_captions_file_that_is_not_utf8_is_refused_by_name(tmp_path):
    # kills: clip.py:read_captions_file: not catching UnicodeDecodeError (a bare decode error)
    (tmp_path / "c.csv").write_bytes(b"file_name,text\ncat/1.png,un caf\xe9\n")
    with pytest.raises(TransferkitError, match="unreadable as UTF-8"):
        read_captions_file(tmp_path / "c.csv")


def test_a_file_name_that_is_no_text_is_refused_naming_the_line(tmp_path):
    # kills: clip.py:read_captions_file: file_name checked as not None only (an AttributeError on a number)
    (tmp_path / "c.jsonl").write_text('{"file_name": "cat/1.png", "text": "a cat"}\n{"file_name": 7, "text": "x"}\n')
    with pytest.raises(TransferkitError, match="line 2 has no file_name"):
        read_captions_file(tmp_path / "c.jsonl")


def test_captions_of_a_captions_file_are_kept_in_nfc(tmp_path):
    # kills: clip.py:read_captions_file: the captions not NFC-normalised
    nfd = unicodedata.normalize("NFD", "un café")
    (tmp_path / "c.csv").write_text(f"file_name,text\ncat/1.png,{nfd}\n", encoding="utf-8")
    [[caption]] = read_captions_file(tmp_path / "c.csv").by_file.values()
    assert caption == unicodedata.normalize("NFC", "un café") and caption != nfd


def test_more_than_three_stray_names_end_in_dots(tmp_path):
    # kills: clip.py:check_captions_file: no ", ..." after the three names shown
    train = _keyed(["cat/1.png", "dog/1.png"])
    lines = "dog/1.png,a dog\n" + "".join(f"cat/{n}.png,a cat\n" for n in (1, 7, 8, 9, 10))
    (tmp_path / "c.csv").write_text("file_name,text\n" + lines)
    with pytest.warns(Warning, match=r"4 of the 6 file names .*'cat/9.png', \.\.\.\): their"):
        check_captions_file(read_captions_file(tmp_path / "c.csv"), tmp_path / "c.csv", [train])


def test_check_captions_file_refuses_a_source_without_file_names(tmp_path):
    # kills: clip.py:check_captions_file: not calling captioned_source first (only a stray-names warning)
    (tmp_path / "c.csv").write_text("file_name,text\ncat/1.png,a cat\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TransferkitError, match="has no file names"):
            check_captions_file(read_captions_file(tmp_path / "c.csv"), tmp_path / "c.csv", [_digits([0, 1])])


# ---- the dual encoder ----------------------------------------------------------------------


def test_a_warmup_beyond_the_whole_training_is_refused():
    # kills: clip.py:ClipMethod.__init__: dropping triplet_warmup <= 1
    with pytest.raises(TransferkitError, match="triplet_warmup"):
        _clip(triplet_warmup=1.5)


def test_clip_scores_the_classes_of_a_source_of_selected_classes():
    # kills: clip.py:ClipMethod.classes_from: reading the classes only of a captioned source
    src = _digits(torch.arange(8) % 4).select_classes(["2", "3"])
    m = _clip()
    m.classes_from(src)
    assert m.class_names == ["2", "3"]


def test_an_empty_captions_option_is_refused_for_the_source():
    # kills: clip.py:ClipMethod.options_for_source: an empty captions list passed through unchecked
    with pytest.raises(TransferkitError, match="list of 0 for 2 source classes"):
        ClipMethod.options_for_source({"captions": []}, ["0", "1"])


def test_retrieval_report_uses_the_embeddings_it_is_given_over_the_images():
    # kills: clip.py:retrieval_report: images encoded again when image_embeddings are given too
    m = _clip()
    txt = m.encode_texts(["a", "b"]).detach()
    classes = torch.tensor([0, 1, 0, 1])
    report = retrieval_report(m, torch.zeros(4, 1, 28, 28), classes, ["a", "b"], torch.tensor([0, 1]), ks=(1,),
                              image_embeddings=txt[classes])
    assert report["i2t_R@1"] == 1.0


# ---- text encoders -------------------------------------------------------------------------


class _NewApiModel(nn.Module):
    """A sentence model of a newer sentence-transformers: get_embedding_dimension only."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))

    def encode(self, texts, batch_size, **kw):
        return torch.stack([self.w.detach() * len(t) for t in texts])

    def get_embedding_dimension(self):
        return 3


def test_a_download_that_fails_otherwise_than_oserror_is_refused_by_name(monkeypatch):
    # kills: text.py:_load_sentence_model: only OSError of the download caught (a bare ValueError)
    from transferkit.text import _load_sentence_model

    def fake(path, device, local_files_only=False):
        raise OSError("not cached") if local_files_only else ValueError("no such repository")

    for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=fake))
    with pytest.raises(TransferkitError, match="cannot load sentence-transformers model 'someone/model'"):
        _load_sentence_model("someone/model", "cpu")


def test_a_sentence_encoder_reads_the_newer_dimension_method(monkeypatch):
    # kills: text.py:SentenceEncoder.__init__: only get_sentence_embedding_dimension read (an AttributeError)
    from transferkit import text
    monkeypatch.setattr(text, "_load_sentence_model", lambda model, device: _NewApiModel())
    enc = text.SentenceEncoder("fake", disk_cache=False)
    assert enc.dim == 3 and enc.encode(["ab"]).shape == (1, 3)


def test_an_unpickled_sentence_encoder_loads_its_model_again(monkeypatch):
    # kills: text.py:SentenceEncoder._encode: no reload of the model dropped by pickling (None has no encode)
    from transferkit import text
    loads = []
    monkeypatch.setattr(text, "_load_sentence_model", lambda model, device: loads.append(model) or _NewApiModel())
    back = pickle.loads(pickle.dumps(text.SentenceEncoder("fake", disk_cache=False)))
    out = back.encode(["abc"])
    assert loads == ["fake", "fake"]
    assert torch.allclose(out[0], torch.nn.functional.normalize(torch.tensor([1.0, 2.0, 3.0]), dim=0))


def test_the_disk_cache_digest_holds_the_torch_version(monkeypatch):
    # kills: text.py:_model_digest: the torch version left out (encodings of another torch read back)
    from transferkit.text import _model_digest
    model = nn.Linear(2, 2)
    before = _model_digest("m", model, "cpu")
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert _model_digest("m", model, "cpu") != before
