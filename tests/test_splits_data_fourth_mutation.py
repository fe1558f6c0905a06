"""Tests from a fourth mutation pass over splits.py and data.py.

Each test kills at least one mutant that survived the existing tests (tests/test_splits.py,
test_data.py, test_domain_registry.py, test_userdata.py, test_plugins.py and the earlier passes,
test_data_config_mutation.py, test_splits_data_mutation.py and test_splits_data_third_mutation.py).
splits.py: the split seed mixed into the keyed order of a domain with keys (a folder's: splits,
k-shot draws and subsamples change with the seed), negative class ids, numbers on a domain where
only some classes are named by numbers. data.py: shift names in upper case, a shift's output
clamped to [0, 1], unsigned builder labels, and a registration's image size in its cache key.
They use hand-made small domains, npz files and Builtin records and never build a built-in.

Judged equivalent, so not tested: ``np.load(..., allow_pickle=True)`` for the syndigits styles
cache (a file transferkit wrote holds no pickled objects; only a forged file reads differently);
``prefix + path.strip()`` in parse_spec's folder prefix loop (the path is already stripped).

Left surviving: none of the real differences found. Mutants that survived the files named above
but are killed elsewhere (so not tested again here): ``fewest_for`` counting parts ``>= 0`` and
returning 0 for None (test_experiment.py), ``Split.__iter__`` as (train, test, val)
(test_eval_edges.py), parse_spec not lowercasing the base (test_bench_flex.py), check_spec not
dropping ``@groupedV``, channels=2 accepted, a colour shift on grey without channels=3, the seed
left out of provenance, ``has_colour_shift`` not dropping ``@groupedV``, ``use_cache=False``
writing the cache and a non-str spec not named (test_data.py).
"""

import numpy as np
import pytest
import torch

from transferkit import data
from transferkit.domain import Domain
from transferkit.errors import TransferkitError
from transferkit.splits import parse_classes, sample_k_shot, split_parts, subsample_per_class


def _keyed(counts):
    """A domain of ``counts[c]`` images of class ``c`` (4 x 4 grey) with int64 keys (a folder's paths)."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)]).long()
    keys = torch.arange(len(labels)) * 7919 + 11
    return Domain("toy", torch.rand(len(labels), 1, 4, 4), labels, [f"c{c}" for c in range(len(counts))],
                  keys=keys)


# ---- splits.py: seeds of a domain with keys --------------------------------------------------
def test_the_seed_changes_the_split_and_the_draws_of_a_domain_with_keys():
    # kills: keyed_ranks mixing only the salt, not torch_seed(seed), into the keys (every seed drew alike)
    d = _keyed([40, 40])
    parts = [split_parts(d, seed=s) for s in range(3)]
    assert not torch.equal(parts[0], parts[1]) and not torch.equal(parts[1], parts[2])
    assert torch.equal(split_parts(d, seed=1), parts[1])  # and fixed for a seed
    shots = [sample_k_shot(d, 3, seed=s)[0].keys.sort().values for s in range(3)]
    assert not torch.equal(shots[0], shots[1]) and not torch.equal(shots[1], shots[2])
    subs = [subsample_per_class(d, 5, seed=s).keys.sort().values for s in range(3)]
    assert not torch.equal(subs[0], subs[1])


# ---- splits.py: class lists ------------------------------------------------------------------
def test_negative_class_ids_are_refused():
    # kills: _check_id accepting -1 (class -1 taken as the last class by indexing)
    d = _keyed([1, 1, 1])
    for classes in ([-1], -1, "-1", "0,-1"):
        with pytest.raises(TransferkitError, match="class id -1 is negative"):
            parse_classes(classes, d)
    with pytest.raises(TransferkitError, match="negative"):
        parse_classes([-1])


def test_numbers_name_ids_when_only_some_classes_are_named_by_numbers():
    # kills: numbered_classes taking any numeric class name for all (int("cat") raised a ValueError)
    d = Domain("toy", torch.rand(3, 1, 4, 4), torch.arange(3), ["10", "cat", "2"])
    assert parse_classes("cat", d) == [1] and parse_classes("10", d) == [0]  # a name wins
    assert parse_classes("1", d) == [1] and parse_classes([2, 0], d) == [2, 0]  # else ids


# ---- data.py: specs ---------------------------------------------------------------------------
def test_specs_are_read_in_any_case():
    # kills: parse_spec not lowercasing the shift names (Blur unknown; the base's .lower() is tested elsewhere)
    assert data.parse_spec(" MNIST + Blur+NOISE ") == ("mnist", ["blur", "noise"])
    base, shifts, entries = data.check_spec("Digits+INVERSION")
    assert (base, shifts) == ("digits", ["inversion"]) and len(entries) == 1


def test_shifted_images_are_clamped_to_the_unit_range(tmp_path, monkeypatch):
    # kills: load_domain not clamping a shift's output to [0, 1]
    from transferkit import shifts
    monkeypatch.setitem(shifts.SHIFTS, "triple", (lambda x, g: x * 3 - 1, "", False))
    np.savez(tmp_path / "a.npz", x=np.arange(32, dtype=np.uint8).reshape(2, 1, 4, 4) * 8, y=np.array([0, 1]))
    images = data.load_domain(f"npz:{tmp_path / 'a.npz'}+triple", size=None).images
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert 0 < float(images[1, 0, 0, 0]) < 1  # 128 / 255 x 3 - 1, kept


def test_a_builder_may_return_unsigned_labels():
    # kills: checked_arrays taking only signed integer labels (uint8 labels, as image tools give them, refused)
    record = data.Builtin("t", lambda: None, 3, 1, 4, "", "", ("a", "b"))
    x, y = data.checked_arrays(record, (np.zeros((3, 4, 4), np.uint8), np.array([1, 0, 1], np.uint8)))
    assert x.shape == (3, 1, 4, 4) and y.dtype == np.int64 and y.tolist() == [1, 0, 1]
    with pytest.raises(TransferkitError, match="labels of shape"):
        data.checked_arrays(record, (np.zeros((3, 4, 4), np.uint8), np.array([1.0, 0.0, 1.0])))


def _squares():
    return np.zeros((2, 4, 4), np.uint8), np.array([0, 1])


def test_a_registration_s_image_size_keys_its_cache_file():
    # kills: register_domain leaving the image size out of the settings its builder digest (cache file name) covers
    try:
        for size in (4, 8):
            data.register_domain(f"squares{size}", _squares, channels=1, size=size, class_names=["a", "b"],
                                 description="")
        assert data.BUILTINS["squares4"].digest != data.BUILTINS["squares8"].digest
    finally:
        for name in ("squares4", "squares8"):
            data.BUILTINS.pop(name, None)
