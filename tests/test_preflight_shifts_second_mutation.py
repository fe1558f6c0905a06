"""Tests from a second mutation pass over preflight.py and shifts.py: which domain specs check_names
reads (the test and unlabelled ones too), the warning of target classes named unlike the source's for
methods that train on target labels, how a refusal raised inside a method's checks is named with the
method, an unnamed class matrix too short for the source's classes refused before training, when
balancing says nothing, the hint of a non-default test / val fraction beside k above a
class and the list of at most ten classes to keep, the text of a val_fraction that gives no class a
val image, select_metric unused beside a method that never selects; and, in shifts.py, an empty
batch's dtype, occlusion on one-pixel-high images, scaling's range of factors, the fixed scalings'
factor and padding, and a shift's one-line description. Each test fails when the code it names is
changed in the way its comment says.

Judged equivalent, so not tested: check_jobs' `check_data` on every seed's subset
rather than the first, and the first subset drawn at seed 0 rather than cfg.seed (each seed's subset
has the same counts per class); `_warn_more_validation_labels`' `"target" in cls.streams`, its
`selection_domain(...) is val` and its `val = None` unless target_val (a method reading no target
label, or any method under select_on none / source_val, gets no target val split from
selection_domain); shifts' hsv hue `where(delta > 0, ...)` dropped (a grey pixel's argmax is red and
its (g - b) is 0), and the clamps of yuv and warp dropped (BT.601 of [0, 1] and bilinear sampling
stay in [0, 1] up to rounding).

Left surviving: `any("target" in cls.streams ...)` -> `all(...)` before warn_unshared_classes (a
method reading no target label refuses target classes the source lacks first, unless it is a
zero-shot method with a class matrix). MNIST-M's backgrounds are built in data.py, outside this
pass. check_selection_classes and `method.check_source` dropped from check_jobs, which this pass left
alive in the files it ran, fail test_experiment.py's
test_data_a_method_cannot_fit_is_refused_before_pre_training and test_clip.py's
test_a_run_refuses_clip_selecting_on_other_classes_before_pre_training (checked by hand)."""

import warnings

import helpers
import pytest
import torch

from transferkit import preflight
from transferkit.config import ExperimentConfig
from transferkit.domain import Domain
from transferkit.errors import TransferkitError, UnknownNameError
from transferkit.methods import get_method
from transferkit.rundata import Prepared


def _warned(fn, *args) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args)
    return [str(w.message) for w in caught]


def _counted(counts) -> Domain:
    """A domain of ``counts[c]`` tiny images of class c (named c0, c1, ...)."""
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))
    return Domain("t", torch.zeros(len(labels), 1, 4, 4), labels, [f"c{c}" for c in range(len(counts))])


# ---- preflight: names ---------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["test", "unlabeled"])
def test_check_names_refuses_an_unknown_test_or_unlabelled_domain(side):
    # kills: cfg.test / cfg.unlabeled left out of the specs check_names checks
    with pytest.raises(UnknownNameError, match="unknown domain 'nosuch'"):
        preflight.check_names(ExperimentConfig(**{side: "nosuch"}))


# ---- preflight: check_jobs on tiny data ---------------------------------------------------------
def _unshared(names, methods) -> list[str]:
    target = helpers.toy_split(10, names=[f"d{i}" for i in range(4)])
    data = Prepared(source=helpers.toy_split(0), target=target, channels=1)
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, select_on="none", methods=names)
    said = _warned(preflight.check_jobs, cfg, data, [get_method(m) for m in methods])
    return [m for m in said if "'d0'" in m]


def test_target_classes_named_unlike_the_sources_are_warned_about_for_a_method_reading_target_labels(one_thread):
    # kills: warn_unshared_classes' call dropped from check_jobs
    said = _unshared(["finetune"], ["finetune"])
    assert len(said) == 1 and "target 'd0' ~ source '0'" in said[0]


def test_what_a_methods_own_check_refuses_is_named_with_the_method(one_thread):
    # kills: `raise method_error(cls, options, e)` -> the bare error (no "method matching_ft:" before it)
    data = Prepared(source=helpers.toy_split(0), target=helpers.toy_split(10), channels=1)
    cfg = ExperimentConfig(backbone="lenet", k=1, repeats=1, select_on="none", methods=["matching_ft"])
    with pytest.raises(TransferkitError, match=r"^method matching_ft: .*2"):
        preflight.check_jobs(cfg, data, [get_method("matching_ft")])


def test_classes_past_an_unnamed_description_matrix_are_refused_before_any_training(one_thread):
    # kills: method.check_classes(...) dropped from check_jobs (the run would fail after pre-training)
    data = Prepared(source=helpers.toy_split(0), target=helpers.toy_split(10), channels=1)
    cfg = ExperimentConfig(backbone="lenet", k=2, repeats=1, select_on="none", methods=["attribute_zsl"],
                           options={"attribute_zsl": {"attributes": [[1.0, 0.0], [0.0, 1.0]]}})
    with pytest.raises(TransferkitError, match=r"^method attribute_zsl .*has 2 rows.*source classes \['2', '3'\]"):
        preflight.check_jobs(cfg, data, [get_method("attribute_zsl")])


# ---- preflight: warnings of settings that do not reach ------------------------------------------
def test_no_balancing_setting_gives_no_balancing_warning():
    # kills: `if not given: return` dropped in _warn_balancing (an empty "balances the classes" warning)
    assert _warned(preflight._warn_balancing, ExperimentConfig(), [get_method("dann"), get_method("source_only")]) == []


def test_select_metric_is_unused_beside_a_method_that_never_selects_even_on_target_val():
    # kills: `cls.selects_on_validation` dropped from the selecting methods (matching_net counted as selecting)
    data = Prepared(source=helpers.toy_split(0), target=helpers.toy_split(10), channels=1)
    cfg = ExperimentConfig(select_metric="balanced_accuracy", select_on="target_val")
    said = _warned(preflight._warn_selection_settings_unused, cfg, data, [get_method("matching_net")])
    assert len(said) == 1 and said[0].startswith("select_metric: balanced_accuracy scores model selection")
    assert "matching_net selects on no labels" in said[0]


# ---- preflight: k above a class -----------------------------------------------------------------
@pytest.mark.parametrize("fractions", [dict(val_fraction=0.1), dict(test_fraction=0.2)])
def test_k_above_a_class_names_a_non_default_fraction_with_both_values_in_order(fractions):
    # kills: the fraction hint's (val_fraction, test_fraction) compared on one of them only; the two values swapped
    cfg = ExperimentConfig(k=4, **fractions)
    with pytest.raises(TransferkitError) as e:
        preflight._check_k_fits(cfg, _counted([1, 5]))
    assert str(e.value).endswith(f"or lower k to 1; or give the train split more of each class: a smaller "
                                 f"test_fraction / val_fraction (now {cfg.test_fraction} / {cfg.val_fraction})")


def test_ten_classes_to_keep_are_listed_and_eleven_are_not():
    # kills: `0 < len(keep) <= 10` -> `< 10`
    with pytest.raises(TransferkitError) as e:
        preflight._check_k_fits(ExperimentConfig(k=2), _counted([1] + [3] * 10))
    assert "(the classes to keep: ['c1', 'c2'," in str(e.value) and "'c10'])" in str(e.value)
    with pytest.raises(TransferkitError) as e:
        preflight._check_k_fits(ExperimentConfig(k=2), _counted([1] + [3] * 11))
    assert "(the classes to keep), or lower k to 1" in str(e.value)


def test_a_val_fraction_of_zero_is_said_to_give_no_class_a_val_image():
    # kills: the `fewest is None` text of _fewest_text replaced
    assert preflight._fewest_text(ExperimentConfig(val_fraction=0.0), "val", "images") == (
        "val_fraction 0.0 gives no class a val image: raise it")


# ---- shifts -------------------------------------------------------------------------------------
def test_an_empty_batch_of_double_images_comes_back_as_float32():
    # kills: apply_shift's empty-batch branch returning `images` unconverted (float64 kept)
    from transferkit.shifts import apply_shift
    out = apply_shift("inversion", torch.zeros(0, 1, 4, 4, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (0, 1, 4, 4)


def test_occlusion_covers_at_least_one_row_of_a_one_pixel_high_image():
    # kills: occlusion's `.clamp(1, h)` of the rectangle's height -> `.clamp(0, h)` (0.3 x 1 px rounds to no row)
    from transferkit.shifts import occlusion
    x = torch.full((64, 1, 1, 10), 2.0)  # above any fill, so every covered pixel changes
    out = occlusion(x, torch.Generator().manual_seed(0))
    assert bool((out != x).flatten(1).any(1).all())


def test_scaling_factors_are_log_uniform_within_1_over_1_5_and_1_5(monkeypatch):
    # kills: scaling's range ±log(1.5) widened (±log(2): zooms past the documented 1.5)
    from transferkit import shifts
    maps = []
    monkeypatch.setattr(shifts, "warp", lambda images, m, padding_mode="zeros": maps.append(m) or images)
    shifts.scaling(torch.zeros(400, 1, 4, 4), torch.Generator().manual_seed(0))
    s = maps[0][:, 0, 0]
    assert float(s.min()) >= 1 / 1.5 - 1e-6 and float(s.max()) <= 1.5 + 1e-6
    assert float(s.min()) < 0.7 and float(s.max()) > 1.4 and torch.allclose(maps[0][:, 1, 1], s)


def test_a_shifts_description_is_its_whole_first_paragraph_on_one_line():
    # kills: _first_line taking the docstring's first line only (blur's description cut at "sigma uniform in")
    from transferkit.shifts import SHIFTS
    description = SHIFTS["blur"][1]
    assert description.startswith("Gaussian blur (") and description.endswith("kernel radius 3 sigma.")
    assert "\n" not in description and "  " not in description


@pytest.mark.parametrize("name, padding", [("scaling_symmetric", "reflection"), ("scaling_stretch", "border")])
def test_the_fixed_scalings_zoom_out_by_0_7_with_their_padding(monkeypatch, name, padding):
    # kills: scaling_symmetric's / scaling_stretch's factor 0.7 changed (0.75 keeps the first pass's checks)
    from transferkit import shifts
    calls = []
    monkeypatch.setattr(shifts, "warp", lambda images, m, padding_mode="zeros": calls.append((m, padding_mode)))
    getattr(shifts, name)(torch.zeros(2, 1, 4, 4))
    (m, mode), = calls
    assert mode == padding and torch.allclose(m.reshape(2, 3), torch.tensor([[0.7, 0, 0], [0, 0.7, 0]]))
