"""Tests from a second mutation pass over zeroshot (description matrices and their files, class
names and their Unicode form, the candidates a fit leaves, embedding_zsl's defaults and text
rows, GZSL calibration and evaluate_zero_shot's class checks).

Each test kills at least one mutation of transferkit/zeroshot.py that survived
tests/test_zeroshot.py, tests/test_zeroshot_mutation.py, tests/test_clip.py and
tests/test_clip_text_mutation.py; the mutations are named in a comment above each test.
Expected values are written out by hand on tiny inputs, never read from the library.

Judged equivalent, so not tested: ``len(other) > 1`` -> ``> 0`` in ``_field_hint`` (a single
piece is the field itself, which is no number); the zsl accuracy averaged over ``seen + unseen``
instead of ``unseen`` in ``zero_shot_report`` (the unseen test samples hold no seen class, and a
class without samples is left out of the mean); naming the last instead of the first group of
repeated rows in ``description_matrix`` (either is a correct report).

Left surviving: the hint of ``check_described`` for a built-in set given with class_names
(wording only: both hints name a fix); ``float(unseen_fraction)`` dropped in
``prior_matched_gamma`` (differs for a string only, which is not a documented input). The zone
attributes are checked on hand-made glyph masks (rendering the 21 fonts is slow).

The pass found one real bug, fixed since: ``class_embeddings="text"`` refused ``class_names`` given as
a numpy array, which the matrix options and clip accept as a list.
"""

import numpy as np
import pytest
import torch
from helpers import tiny_net

from transferkit.domain import Domain
from transferkit.engine import Engine, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.zeroshot import (
    AttributeZeroShot,
    EmbeddingZeroShot,
    attribute_matrix,
    attribute_scores,
    calibrated,
    description_matrix,
    digit_attributes,
    evaluate_zero_shot,
    glyph_zone_attributes,
    matrix_file,
    mean_class_accuracy,
    prior_matched_gamma,
    seen_columns,
    zero_shot_report,
)

EYE3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
DECOMPOSED, COMPOSED = "cafe\u0301", "caf\u00e9"  # the same name, NFD and NFC


def _domain(names, n=12, seed=0, groups=None, size=28):
    g = torch.Generator().manual_seed(seed)
    return Domain("d", torch.rand(n, 1, size, size, generator=g), torch.arange(n) % len(names), list(names), groups)


# ---- built-in sets and matrix files ------------------------------------------------------------


# is_digit_set: all -> any (a name with one unknown part passed, then a KeyError)
def test_a_combined_set_name_with_an_unknown_part_is_refused_by_name():
    for call in (lambda: digit_attributes("strokes+bogus"), lambda: attribute_matrix("strokes+bogus")):
        with pytest.raises(TransferkitError, match=r"unknown digit attribute set.*'strokes\+bogus'"):
            call()


# glyph_zone_attributes: cells > threshold -> >=; the 44 px box 10:54 -> a wider one
def test_glyph_zones_count_fonts_with_ink_above_the_threshold_inside_the_glyph_box(monkeypatch):
    import transferkit.data as data
    masks = torch.zeros(2, 10, 64, 64)
    masks[0, 0, 10:54, 10:54] = 0.5  # font 0, digit 0: coverage exactly 0.5 everywhere in the box
    masks[:, 1, 54:, :] = 1.0  # digit 1: ink below the box only
    masks[:, 1, :10, :] = 1.0  # and above it
    masks[1, 2, 10:54, 10:54] = 1.0  # digit 2: ink in font 1 only
    monkeypatch.setattr(data, "glyph_masks", lambda: masks)
    at_half = glyph_zone_attributes(grid=1, threshold=0.5)
    assert at_half[0].tolist() == [0.0]  # not above 0.5
    assert glyph_zone_attributes(grid=1, threshold=0.4)[0].tolist() == [0.5]  # 1 of the 2 fonts
    zones = glyph_zone_attributes(grid=3, threshold=0.05)
    assert zones.shape == (10, 9)
    assert zones[1].tolist() == [0.0] * 9  # ink outside the box is no zone
    assert zones[2].tolist() == [0.5] * 9


def _save_upper(tmp_path):
    a = np.array(EYE3)
    with open(tmp_path / "A.NPY", "wb") as f:  # np.save would add ".npy" to the name
        np.save(f, a)
    np.savetxt(tmp_path / "A.CSV", a, delimiter=",")
    np.savetxt(tmp_path / "A.TXT", a)
    return a


# matrix_file: suffix.lower() != ".npy" -> suffix != ".npy"; _text_matrix: sep by suffix.lower() -> suffix;
# attribute_matrix: suffix.lower() in MATRIX_FILES -> suffix in; described_by: the same
def test_matrix_files_with_an_upper_case_suffix_are_read_and_named_as_files(tmp_path):
    a = _save_upper(tmp_path)
    for name in ("A.NPY", "A.CSV", "A.TXT"):
        assert matrix_file(tmp_path / name, "attribute matrix").tolist() == a.tolist()
        m = AttributeZeroShot(tiny_net(3), attributes=str(tmp_path / name), class_names=["a", "b", "c"])
        assert m.class_attributes.tolist() == a.tolist()
    with pytest.raises(TransferkitError, match=r"the attributes file '.*A.CSV' has 3 rows while class_names lists 4"):
        AttributeZeroShot(tiny_net(3), attributes=str(tmp_path / "A.CSV"), class_names=["a", "b", "c", "d"])


# matrix_file: m.ndim == 2 -> m.ndim >= 2 (a 3-D array was then named by description_matrix, without its file)
def test_a_three_dimensional_npy_file_is_named_with_its_shape(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(TransferkitError, match=r"'.*cube.npy' holds an array of shape \(2, 2, 2\): it must be "
                                               r"classes x features"):
        matrix_file(tmp_path / "cube.npy", "attribute matrix")


# matrix_file: np.load(allow_pickle=False) -> True (a pickled array of objects was loaded, running its pickle)
def test_an_npy_file_of_objects_is_not_unpickled(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([[1, 0], [0, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(TransferkitError, match=r"'.*objects.npy' cannot be read as a matrix of numbers"):
        matrix_file(tmp_path / "objects.npy", "attribute matrix")


# _text_matrix: the UnicodeDecodeError caught -> not caught (a raw traceback, no advice)
def test_a_matrix_file_that_is_not_utf8_is_named_with_the_fix(tmp_path):
    (tmp_path / "latin.csv").write_bytes("1,0\n0,1\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(TransferkitError, match=r"'.*latin.csv' is not UTF-8 text .*save it as UTF-8"):
        matrix_file(tmp_path / "latin.csv", "attribute matrix")


# _text_matrix: the most common row width -> the first row's width (the good rows were blamed)
def test_a_short_first_row_is_the_row_named(tmp_path):
    (tmp_path / "m.csv").write_text("1,0\n1,0,1\n0,1,1\n0,0,1\n")
    with pytest.raises(TransferkitError, match=r"row 1 has 2 values where the other rows have 3"):
        matrix_file(tmp_path / "m.csv", "attribute matrix")


# _field_hint: `sep and ";" in field` -> `";" in field` (a .txt was told that a .csv separates by commas)
def test_semicolons_in_a_txt_file_get_no_csv_hint(tmp_path):
    (tmp_path / "m.txt").write_text("1;0 1\n0;1 0\n")
    with pytest.raises(TransferkitError, match="column 1 holds '1;0', not a number") as caught:
        matrix_file(tmp_path / "m.txt", "attribute matrix")
    assert ".csv separates" not in str(caught.value)
    (tmp_path / "m.csv").write_text("1;0,1\n0;1,0\n")
    with pytest.raises(TransferkitError, match="a .csv separates values by commas"):
        matrix_file(tmp_path / "m.csv", "attribute matrix")


# ---- description matrices ----------------------------------------------------------------------


# description_matrix: shape[1] >= 1 -> >= 0 (rows without features: "the same values"); isfinite -> not isnan
def test_description_matrices_need_a_feature_and_finite_values():
    with pytest.raises(TransferkitError, match=r"at least 2 classes, got shape \(2, 0\)"):
        description_matrix([[], []], "class_embeddings")
    for bad in (float("inf"), float("-inf")):
        with pytest.raises(TransferkitError, match="class_embeddings has NaN or infinite values"):
            description_matrix([[bad, 0.0], [0.0, 1.0]], "class_embeddings")


# attribute_matrix: return a.clone() -> a (the method's buffer shared the user's tensor)
def test_attribute_zsl_keeps_its_own_copy_of_a_given_matrix():
    given = torch.tensor(EYE3)
    m = AttributeZeroShot(tiny_net(3), attributes=given)
    given[0, 0] = 0.0
    assert m.class_attributes[0].tolist() == [1.0, 0.0, 0.0]


# ---- class names -------------------------------------------------------------------------------


# repeated: NFC normalization dropped; __init__: row_names not NFC; option_row_names: not NFC
def test_class_names_are_compared_in_their_nfc_form():
    with pytest.raises(TransferkitError, match="more than once"):
        AttributeZeroShot(tiny_net(3), attributes=EYE3, class_names=[DECOMPOSED, COMPOSED, "tea"])
    m = AttributeZeroShot(tiny_net(3), attributes=EYE3, class_names=[DECOMPOSED, "tea", "milk"])
    assert m.row_names == [COMPOSED, "tea", "milk"]
    dom = _domain([COMPOSED, "tea"])
    assert m.to_rows(dom).class_names == [COMPOSED, "tea", "milk"]
    options = {"attributes": EYE3, "class_names": [DECOMPOSED, "tea", "milk"]}
    assert AttributeZeroShot.option_row_names(options) == [COMPOSED, "tea", "milk"]
    AttributeZeroShot.check_described(options, [COMPOSED, "milk"])  # a domain's names are NFC: described


# __init__: class_names refused as a string -> a string accepted (its letters named the rows)
def test_class_names_given_as_one_string_are_refused():
    with pytest.raises(TransferkitError, match="class_names must be a list of names, one per row of the attributes "
                                               "matrix, got 'abc'"):
        AttributeZeroShot(tiny_net(3), attributes=EYE3, class_names="abc")


# check_described: `rows is not None and c not in rows` -> `rows and ...` (an empty class_names described every class)
def test_an_empty_class_names_list_describes_no_class():
    with pytest.raises(TransferkitError, match=r"the classes \['a'\] have no description"):
        AttributeZeroShot.check_described({"attributes": EYE3, "class_names": []}, ["a"])


# check_classes: the early return for named rows dropped (named rows were counted as class ids)
def test_named_rows_are_not_read_as_class_ids_by_their_count():
    m = AttributeZeroShot(tiny_net(3), attributes=EYE3, class_names=["a", "b", "c"])
    m.check_classes(["a", "b", "c", "d"], ["c", "a", "b", "e"])  # matched by name (check_described), not here
    unnamed = AttributeZeroShot(tiny_net(3), attributes=EYE3)
    with pytest.raises(TransferkitError, match=r"the source classes \['d'\] have no row"):
        unnamed.check_classes(["a", "b", "c", "d"], None)


# ---- prepare, fits and candidates --------------------------------------------------------------


# prepare: the `break` after the unnamed-rows warning dropped (one warning per domain)
def test_unnamed_rows_warn_once_for_source_and_target_alike():
    import warnings
    m = AttributeZeroShot(tiny_net(3), attributes=EYE3)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m.prepare({"source": _domain(["x", "y"]), "target": _domain(["x", "y", "z"])})
    assert sum("have no class names" in str(w.message) for w in seen) == 1


def _engine_maker(steps=1):
    cfg = TrainConfig(steps=steps, batch_size=6, eval_every=steps, progress=False)
    return lambda tag, config=None: Engine(config or cfg, seed=0)


# prepare: _candidates_given not restored after its own set_candidates (a later fit's candidates were the
# first fit's classes)
def test_a_second_fit_on_fewer_classes_leaves_its_own_classes_as_candidates():
    torch.manual_seed(0)
    m = AttributeZeroShot(tiny_net(3), attributes=[[1, 0], [0, 1], [1, 1], [0, 0]])
    m.fit_transfer(_engine_maker(), source=_domain(["0", "1", "2"]))
    assert m.candidates.tolist() == [True, True, True, False]
    m.fit_transfer(_engine_maker(), source=_domain(["0", "1"]))
    assert m.candidates.tolist() == [True, True, False, False]


# fit_transfer: candidates restored only when set by the user -> always restored (all rows after a first fit)
def test_a_first_fit_leaves_the_seen_classes_as_candidates():
    torch.manual_seed(0)
    m = AttributeZeroShot(tiny_net(3), attributes=[[1, 0], [0, 1], [1, 1], [0, 0]])
    m.fit_transfer(_engine_maker(), source=_domain(["0", "1"]))
    assert m.candidates.tolist() == [True, True, False, False]


# scores: input_unit not restored afterwards
def test_scores_restore_the_input_unit():
    m = AttributeZeroShot(tiny_net(3), attributes=EYE3)
    m.input_unit = m.net.unit_names[1]  # as the engine sets it over cached features
    m.scores(torch.rand(2, 1, 28, 28))
    assert m.input_unit == m.net.unit_names[1]


# AttributeZeroShot.prepare: len(trained_rows) > 1 -> >= 1 (one seen class warned of every attribute)
def test_one_seen_class_gets_no_constant_attribute_warning():
    import warnings
    m = AttributeZeroShot(tiny_net(3), attributes=EYE3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.prepare({"source": _domain(["0"], n=4)})


# attribute_scores: the final raise for an unknown metric dropped (None returned)
def test_attribute_scores_refuse_an_unknown_metric():
    with pytest.raises(TransferkitError, match="unknown attribute metric"):
        attribute_scores(torch.zeros(1, 3), torch.tensor(EYE3), "cosine")


# ---- embedding_zsl -----------------------------------------------------------------------------


# EmbeddingZeroShot.__init__: scale default 10 -> 1; dim default 64 -> 32
def test_embedding_zsl_defaults_are_a_scale_of_ten_and_64_dimensions():
    import torch.nn.functional as F
    torch.manual_seed(0)
    m = EmbeddingZeroShot(tiny_net(3), class_embeddings=EYE3)
    assert m.image_proj.out_features == 64 and m.class_proj.out_features == 64
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        f = m.image_proj(m.net.forward_features(x))
        g = m.class_proj(torch.tensor(EYE3))
        expected = 10.0 * F.cosine_similarity(f[:, None, :], g[None, :, :], dim=-1)
    assert torch.allclose(m.scores(x), expected, atol=1e-5)


# description_rows: encoder or DEFAULT_TEXT_MODEL -> another default encoder
def test_text_rows_use_the_default_encoder_and_the_given_templates(monkeypatch):
    import transferkit.zeroshot as zs
    from transferkit.text import DEFAULT_TEXT_MODEL
    calls = []

    def fake(names, encoder, templates=None):
        calls.append((names, encoder, templates))
        return torch.eye(len(names), 4)
    monkeypatch.setattr(zs, "class_text_embeddings", fake)
    EmbeddingZeroShot(tiny_net(3), class_embeddings="text", class_names=["cat", "dog"], templates=("a {}",))
    EmbeddingZeroShot(tiny_net(3), class_embeddings="text:hashing", class_names=[1, 2])
    assert calls == [(["cat", "dog"], DEFAULT_TEXT_MODEL, ("a {}",)), (["1", "2"], "hashing", None)]


def test_text_rows_take_class_names_as_an_array_as_the_matrices_do():
    # was a real bug: description_rows took only a list or tuple of class names for text rows
    names = np.array(["cat", "dog"])
    assert AttributeZeroShot(tiny_net(3), attributes=[[1, 0], [0, 1]], class_names=names).row_names == ["cat", "dog"]
    m = EmbeddingZeroShot(tiny_net(3), class_embeddings="text:hashing", class_names=names)
    assert m.row_names == ["cat", "dog"] and m.class_embeddings.shape[0] == 2
    for bad in ("cat", ["cat"], 7):  # a text, one name, no names: still refused, with the fix
        with pytest.raises(TransferkitError, match="give class_names"):
            EmbeddingZeroShot(tiny_net(3), class_embeddings="text:hashing", class_names=bad)


# ---- reports and calibration -------------------------------------------------------------------


# mean_class_accuracy: the check for no sample of the classes dropped (ZeroDivisionError)
def test_mean_class_accuracy_without_a_sample_of_the_classes_is_named():
    with pytest.raises(TransferkitError, match="no test sample of the requested classes"):
        mean_class_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]), [2, 3])


# zero_shot_report: bool gamma accepted; the check for unseen test images dropped
def test_gzsl_report_refuses_a_boolean_gamma_and_a_test_set_without_unseen_images():
    scores, labels = torch.eye(4), torch.tensor([0, 1, 2, 3])
    with pytest.raises(TransferkitError, match="gamma must be a number, got True"):
        zero_shot_report(scores, labels, [0, 1], [2, 3], gamma=True)
    with pytest.raises(TransferkitError, match=r"no test image of the unseen classes \[2, 3\]"):
        zero_shot_report(scores[:2], labels[:2], [0, 1], [2, 3])


# prior_matched_gamma: shape[0] > 0 -> >= 0 (torch's own error on empty scores); 0 < q -> 0 <= q
def test_prior_gamma_refuses_no_samples_and_an_unseen_fraction_of_zero():
    with pytest.raises(TransferkitError, match=r"non-empty N x C matrix, got shape \(0, 3\)"):
        prior_matched_gamma(torch.zeros(0, 3), [0], [1, 2])
    with pytest.raises(TransferkitError, match=r"unseen_fraction must lie in \(0, 1\), got 0.0"):
        prior_matched_gamma(torch.eye(3), [0], [1, 2], unseen_fraction=0)


# calibrated: isfinite dropped; bool gamma accepted; the 'prior' check for seen and unseen outputs dropped;
# gamma subtracted -> added
def test_calibration_subtracts_a_finite_gamma_from_the_seen_columns_only():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.5, 4.0]])
    out, gamma = calibrated(logits, [0, 2], 1.5)
    assert gamma == 1.5 and out.tolist() == [[-0.5, 2.0, 1.5], [-1.5, 0.5, 2.5]]
    assert logits[0, 0] == 1.0  # the caller's logits are left alone
    for bad in (float("inf"), float("nan"), True):
        with pytest.raises(TransferkitError, match="gzsl_gamma must be a number or 'prior'"):
            calibrated(logits, [0], bad)
    with pytest.raises(TransferkitError, match="gzsl_gamma='prior' needs seen and unseen classes among the outputs"):
        calibrated(logits, [0, 1, 2], "prior")


# seen_columns: output columns j -> description rows r (wrong when the outputs are a reordered subset of rows)
def test_seen_columns_are_output_columns_not_description_rows():
    m = AttributeZeroShot(tiny_net(3), attributes=[[1, 0], [0, 1], [1, 1], [0, 0], [0.5, 0.5]])
    m.trained_rows = [0, 1, 2]
    m.output_rows = [4, 2, 0]  # the target's classes: rows 4, 2, 0
    assert seen_columns(m) == [1, 2]
    m.output_rows = None
    assert seen_columns(m) == [0, 1, 2]


# ---- evaluate_zero_shot ------------------------------------------------------------------------


def _unnamed_trained():
    """attribute_zsl over 5 unnamed rows, trained (prepared) on the class ids 0-2."""
    torch.manual_seed(0)
    m = AttributeZeroShot(tiny_net(3), attributes=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]])
    m.prepare({"source": _domain(["0", "1", "2"])})
    return m.eval()


# evaluate_zero_shot: "gamma" returned as given (an int), not as a float
def test_evaluate_zero_shot_on_unnamed_rows_names_classes_by_id():
    m = _unnamed_trained()
    test = _domain(["0", "1", "2", "3", "4"], n=20)
    r = evaluate_zero_shot(m, test, [0, 1, 2], [3, 4], gamma=1)
    assert set(r) == {"zsl", "seen", "unseen", "h", "gamma"} and type(r["gamma"]) is float and r["gamma"] == 1.0
    with pytest.raises(TransferkitError, match=r"the unseen classes \[2\] are classes the model was trained on "
                                               r"\(its seen classes are \[0, 1, 2\]\)"):
        evaluate_zero_shot(m, test, [0, 1], [2, 3, 4])


# _row_ids: a single id -> list(id) (a TypeError); the check for names on unnamed rows dropped
def test_evaluate_zero_shot_takes_one_unseen_id_and_refuses_names_for_unnamed_rows():
    m = _unnamed_trained()
    test = _domain(["0", "1", "2", "3"], n=16)
    assert evaluate_zero_shot(m, test, [0, 1, 2], 3) == evaluate_zero_shot(m, test, [0, 1, 2], [3])
    with pytest.raises(TransferkitError, match="unseen classes are given by name, but the method's description rows "
                                               "have no class names"):
        evaluate_zero_shot(m, test, [0, 1, 2], ["3"])


# seen_columns: clip trained on none of the classes it scores -> None ("trained before 2026-12-02") instead of []
def test_seen_columns_of_clip_are_its_trained_classes_among_those_it_scores():
    from transferkit.clip import ClipMethod
    from transferkit.text import HashingEncoder
    torch.manual_seed(0)
    for names, seen in ((["5", "6", "7", "8", "9"], [0, 1]), (["7", "8", "9"], [])):
        clip = ClipMethod(tiny_net(10), captions=[f"digit {i}" for i in range(7)], class_names=names,
                          text_encoder=HashingEncoder(16))
        clip.trained_classes = [str(i) for i in range(7)]  # trained on 0-6, as prepare records it
        assert seen_columns(clip) == seen


# renumbered: dict(provenance) -> the same dict (the renumbered domain's provenance edited the original's)
def test_to_rows_gives_the_domain_its_own_provenance():
    m = AttributeZeroShot(tiny_net(3), attributes=EYE3, class_names=["a", "b", "c"])
    dom = Domain("d", torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1]), ["c", "a"], provenance={"base": "x"})
    mapped = m.to_rows(dom)
    assert mapped.labels.tolist() == [2, 0, 2, 0]
    mapped.provenance["classes"] = ["changed"]
    assert dom.provenance == {"base": "x"}


# ---- second batch: files by path, option rows, candidates -------------------------------------


# matrix_file: expanduser dropped ("~/..." not found); is_file -> exists (a folder read as a file: IsADirectoryError)
def test_a_matrix_path_may_start_at_home_and_a_folder_is_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.csv").write_text("1,0\n0,1\n")
    assert matrix_file("~/m.csv", "attribute matrix").tolist() == [[1.0, 0.0], [0.0, 1.0]]
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(TransferkitError, match=r"the attribute matrix file '.*folder.csv' does not exist"):
        matrix_file(tmp_path / "folder.csv", "attribute matrix")


# description_rows: a file's description named "class_embeddings", without the file
def test_embedding_rows_of_a_file_are_named_by_the_file(tmp_path):
    (tmp_path / "dup.csv").write_text("1,0\n1,0\n0,1\n")
    with pytest.raises(TransferkitError, match=r"class_embeddings '.*dup.csv' gives rows \[0, 1\] the same values"):
        EmbeddingZeroShot(tiny_net(3), class_embeddings=str(tmp_path / "dup.csv"))


# _seen_unseen: the string check for unseen dropped (a string of digits was read as ids)
def test_gzsl_report_refuses_unseen_classes_given_as_a_string():
    with pytest.raises(TransferkitError, match="unseen must be class ids .* got the string '23'"):
        zero_shot_report(torch.eye(4), torch.tensor([0, 1, 2, 3]), [0, 1], "23")


# option_row_names: `not isinstance(given, str)` dropped (a string class_names split into letters)
def test_option_rows_of_a_string_class_names_are_none():
    assert AttributeZeroShot.option_row_names({"attributes": EYE3, "class_names": "abc"}) is None


# check_described: classes of both source and target counted twice in the message
def test_a_class_without_a_row_is_named_once_when_source_and_target_share_it():
    options = {"attributes": EYE3, "class_names": ["a", "b", "c"]}
    with pytest.raises(TransferkitError, match=r"the classes \['x'\] have no description"):
        AttributeZeroShot.check_described(options, ["a", "x", "b", "x"])


# prepare: a domain must be the first description rows -> all of them (a domain of the first classes refused)
def test_a_domain_of_the_first_named_rows_in_order_is_accepted():
    m = AttributeZeroShot(tiny_net(3), attributes=EYE3, class_names=["a", "b", "c"])
    m.prepare({"source": _domain(["a", "b"])})
    assert m.trained_rows == [0, 1]


# set_candidates(None): every class again -> no class
def test_candidates_reset_to_every_class():
    m = AttributeZeroShot(tiny_net(3), attributes=EYE3)
    m.set_candidates([1])
    assert m.candidates.tolist() == [False, True, False]
    m.set_candidates(None)
    assert m.candidates.tolist() == [True, True, True]
