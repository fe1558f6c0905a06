"""Domains registered outside the package: transferkit.register_domain, plugin modules, the cache key."""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

import transferkit
from transferkit import data
from transferkit.cli import main
from transferkit.data import BUILTINS, CACHE_VERSION, build_tag, cache_path, check_spec, list_domains, load_domain
from transferkit.errors import TransferkitError, UnknownNameError

CLASSES = ["low", "middle", "high"]

#: a plugin module: 60 16 x 16 grey images, a bright bar at one of three heights (its class)
BARS_PLUGIN = """import numpy as np

import transferkit

BRIGHT = BRIGHTNESS


@transferkit.register_domain("bars", channels=1, size=16, class_names=["low", "middle", "high"],
                             description="bars at three heights", num_images=60)
def bars():
    labels = np.arange(60) % 3
    x = np.random.default_rng(0).integers(0, 40, (60, 16, 16)).astype(np.uint8)
    for i, c in enumerate(labels):
        x[i, 3 + 4 * c:6 + 4 * c, 2:14] = BRIGHT
    return x, labels
"""


def bars_plugin(brightness: int = 200) -> str:
    return BARS_PLUGIN.replace("BRIGHTNESS", str(brightness))


@pytest.fixture
def forget_domains():
    """Domains registered by a test are removed afterwards (later tests list every domain)."""
    before = set(BUILTINS)
    yield
    for name in set(BUILTINS) - before:
        del BUILTINS[name]


def checker_arrays(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 3
    return np.full((n, 8, 8), 30, np.uint8) * (labels[:, None, None] + 1).astype(np.uint8), labels


def register_checkers(build=checker_arrays, **changes):
    settings = {"channels": 1, "size": 8, "class_names": CLASSES, "description": "grey squares of 3 levels"}
    return transferkit.register_domain("checkers", build, **{**settings, **changes})


def test_a_registered_domain_is_named_as_a_built_in_is(forget_domains, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))

    @transferkit.register_domain("checkers", channels=1, size=8, class_names=CLASSES, description="grey squares")
    def checkers():
        return checker_arrays()

    dom = load_domain("checkers+inversion", size=8)
    assert dom.class_names == CLASSES and dom.labels.tolist() == (np.arange(12) % 3).tolist()
    assert dom.images[0, 0, 0, 0].item() == pytest.approx(1 - 30 / 255)  # grey N x H x W, inverted
    assert dom.provenance["builder_digest"] == BUILTINS["checkers"].digest
    row = next(r for r in list_domains() if r["name"] == "checkers")
    assert row["registered_in"] == __name__ and row["size"] is None and row["origin"].endswith("checkers")
    assert cache_path("checkers").name == f"checkers-{CACHE_VERSION}-{build_tag()}-{BUILTINS['checkers'].digest}.npz"
    assert cache_path("checkers").is_file()
    assert cache_path("digits").name == f"digits-{CACHE_VERSION}-{build_tag()}.npz"  # shipped: as before


def test_a_domain_another_process_is_building_is_waited_for_and_read_not_built_again(forget_domains, tmp_path,
                                                                                    monkeypatch):
    import threading
    import time

    from transferkit.io import waiting_lock
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    calls = []
    register_checkers(lambda: calls.append("built") or checker_arrays())
    path, reads, got = cache_path("checkers"), [], {}
    read = data._read_cache
    monkeypatch.setattr(data, "_read_cache", lambda p, b: reads.append(p) or read(p, b))
    with waiting_lock(path.with_suffix(".lock")):  # the other builder holds the domain's lock
        waiter = threading.Thread(target=lambda: got.update(arrays=data.builtin_arrays("checkers")))
        waiter.start()
        deadline = time.time() + 30
        while not reads and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert reads and waiter.is_alive() and not calls  # missed the cache, now waits for the lock
        x, y = data.checked_arrays(BUILTINS["checkers"], checker_arrays())
        data._write_cache(path, {"x": x, "y": y})  # what the other builder leaves behind
    waiter.join(30)
    assert not calls and len(reads) == 2 and got["arrays"][0].tobytes() == x.tobytes()


@pytest.mark.parametrize("changes, message", [
    ({"name": "Checkers"}, "domain name 'Checkers': use lowercase letters"),
    ({"name": "my+dots"}, "domain name 'my\\+dots'"),
    ({"name": "mnist"}, "domain name 'mnist' is taken by transferkit.data._build_mnist; .* choose another name"),
    ({"channels": 2}, "channels must be 1 \\(grey\\) or 3 \\(RGB\\), got 2"),
    ({"size": 0}, "size is the image side in pixels"),
    ({"num_images": 0}, "num_images must be a positive int"),
    ({"class_names": "abc"}, "class_names must be a list of distinct"),
    ({"class_names": ["a", "a"]}, "class_names must be a list of distinct"),
    ({"build": 3}, "build must be a function returning \\(images, labels\\), got 3"),
])
def test_a_registration_that_cannot_work_is_refused(forget_domains, changes, message):
    settings = {"name": "checkers", "build": checker_arrays, "channels": 1, "size": 8, "class_names": CLASSES,
                "description": "", **changes}
    name, build = settings.pop("name"), settings.pop("build")
    with pytest.raises(TransferkitError, match=message):
        transferkit.register_domain(name, build, **settings)
    assert BUILTINS["mnist"].build is data._build_mnist


@pytest.mark.parametrize("returned, message", [
    (lambda x, y: [x, y], "a list; return \\(images, labels\\)"),
    (lambda x, y: (x.astype(np.float32) / 255, y), "images of dtype float32; return uint8"),
    (lambda x, y: (x[..., :4, :], y), "images of shape \\(12, 1, 4, 8\\); it was registered for 12 x 1 x 8 x 8"),
    (lambda x, y: (np.moveaxis(np.repeat(x, 3, 1), 1, 3), y), "channels last\\? x.transpose\\(0, 3, 1, 2\\)"),
    (lambda x, y: (x[:0], y[:0]), "no images"),
    (lambda x, y: (x, y + 1), "labels 1..3; they index its 3 class_names \\(0..2\\)"),
    (lambda x, y: (x, y.astype(float)), "labels of shape \\(12,\\) and dtype float64 for 12 images"),
    (lambda x, y: (x, y[:5]), "labels of shape \\(5,\\)"),
])
def test_what_a_builder_returns_is_checked_and_named(forget_domains, returned, message, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))

    def build():
        x, y = checker_arrays()
        return returned(x[:, None], y)

    register_checkers(build, num_images=12, channels=3 if "channels last" in message else 1)
    with pytest.raises(TransferkitError, match=f"domain 'checkers': its builder .*build returned .*{message}"):
        load_domain("checkers")
    assert not [p.name for p in tmp_path.glob("domains/*") if p.suffix != ".lock"]  # nothing cached (the lock stays)


def test_an_edited_builder_is_built_again_not_read_from_the_cache(plugin, forget_domains, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    plugin("bars_domain", bars_plugin(200))
    importlib.import_module("bars_domain")
    first = load_domain("bars", size=None)
    assert first.images.max().item() == pytest.approx(200 / 255)
    plugin("bars_domain", bars_plugin(99))  # a constant of its file edited, re-imported: the same definition
    importlib.reload(sys.modules["bars_domain"])
    assert load_domain("bars", size=None).images.max().item() == pytest.approx(99 / 255)  # was 200: the old cache
    assert len(list((tmp_path / "cache" / "domains").glob("bars-*.npz"))) == 2


def test_a_builder_without_a_source_file_is_keyed_by_its_code():
    digests = set()
    for value in (1, 2):  # typed in at a prompt: no file to read
        namespace = {"__name__": "typed_in"}
        exec(f"def build():\n    return {value}\n", namespace)
        digests.add(data.builder_digest(namespace["build"], {}))
    assert len(digests) == 2


def test_an_unknown_domain_imports_the_plugin_modules_and_names_them(plugin, forget_domains, monkeypatch, capsys):
    plugin("bars_domain", bars_plugin())
    with pytest.raises(UnknownNameError, match=r"unknown domain 'bars'; .*\(a plugin's domain\? name its module in "
                                               r"TRANSFERKIT_PLUGINS, which is unset here\)"):
        check_spec("bars+blur")
    monkeypatch.setenv("TRANSFERKIT_PLUGINS", "bars_domain")
    assert check_spec("bars+blur")[:2] == ("bars", ["blur"])  # imported on the miss, as for a method
    from transferkit.bench import as_pairs
    assert as_pairs("digits:bars") == (("digits", "bars"),)
    del BUILTINS["bars"], sys.modules["bars_domain"]
    assert main(["domains"]) == 0  # lists the plugin's domains
    out = capsys.readouterr().out
    assert "\nbars              60       3        1    16  bars at three heights (registered by bars_domain)\n" in out


def test_worker_processes_find_a_plugin_domain(tmp_path):
    (tmp_path / "bars_domain.py").write_text(bars_plugin())
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "TRANSFERKIT_PLUGINS": "bars_domain", "OMP_NUM_THREADS": "1",
           "TRANSFERKIT_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "transferkit.cli", "run", "--workers", "2", "--set", "source=bars",
                        "--set", "target=bars+inversion", "--set", "methods=[target_only,finetune]", "--set",
                        "repeats=2", "--set", "k=2", "--set", "train.steps=2", "--set", "pretrain.steps=2", "--set",
                        "select_on=none", "--set", f"out_dir={tmp_path}"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr  # was: unknown domain 'bars' (in every worker, once past the main process)
    assert "| finetune | bars | bars+inversion |" in p.stdout, p.stdout
    assert len(list((tmp_path / "cache" / "domains").glob("bars-*.npz"))) == 1


def test_two_lambdas_of_one_module_cannot_take_one_name(forget_domains):
    first = lambda: checker_arrays()  # noqa: E731
    second = lambda: checker_arrays(6)  # noqa: E731
    register_checkers(first)
    register_checkers(first)  # the same builder again: a module imported again
    with pytest.raises(TransferkitError, match=r"domain name 'checkers' is taken by .*<lambda> \(line \d+\)"):
        register_checkers(second)
