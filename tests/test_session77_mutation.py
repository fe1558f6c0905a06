"""Session 77 mutation pass (h_mut): tests that kill the hand-made mutants of this session's library change
(``git diff 728452f..HEAD -- transferkit``) that the session's tests (tests/test_session77*.py and related
files, run with ``-x -q``) let through. Each mutant was applied alone and reverted.

Tried (111): config_file cf1-5; _stage_dir / fit clean-up st1-2, sd1; _resume_hint and its print rh1-4;
save_failure sf1-3; failures_message fm1-2; results.json's traceback ex1; _cache_hint EFBIG ch1; code_text ct1-4;
own_code oc1-5; definition_digest dd1-3; main_only / _top_level / _main_guard / check_workers_reach mo1-13;
the experiment's specs to it ew1; self_reference's size count and MAX_CONFIG_VALUES sr1-6; warn_repeated /
_parsed wr1, pa1; YAML constructors y1-3; within_memory wm1-7; select_classes' set check sc1-3; tap_units tu1-2;
TextEncoder._remember / _stored_rows / _stored te1-6; _try_lock / msvcrt / _lock_holder tl1, ms1-4, lh1, lw1;
ft_unit_named's weak cache fu1-2; UnitNet.forward's activation_shapes check u1-2; the engine's activation_shapes
e1-4; _check_callable cc1-2; _check_runs' fallback shape cr1-4; _numbered_against_named na1-4;
check_own_modules_take's two stages co1-3; episodes' smaller-K advice fe1-3; npz string labels ud1-2; the
build_method quiet() aq1; Transfer's pre-training memo key ak1; the run's source-cache key sk1; _run_config's
config_file rc1.

Killed before (71): the rest of the list above, by tests/test_session77*.py (and, for a few,
test_session73 / test_io_jobs_* / test_represent_tap_* / test_finetune_flex_second_mutation).

Killed by the tests here (33): fm2 (only the first failure looked at), ex1 (no ``if f.path``), ct2 (no tuple
branch), ct3 (no co_names), ct4 (nested code by repr), oc2 (no source file), oc4 (``__module__`` None crashes),
oc5 (no bases), mo2 / mo3 / mo4 / mo12 (else / except / finally / with blocks not walked for class statements),
mo7 (any ``NAME == ...`` taken for the main guard), mo11 (a registered name ignored for classes), mo13 (the name
not passed), sr2 (a container not counted), sr4 (``<`` for ``<=``), sc1 (dict keys refused), tu1 (a mapping
taken), tu2 (a number: TypeError), cr1 (image_size None run), cr3 (the guessed 224 run), cr4 (lazy parameters
materialised), na1 (``any`` for ``all``), na2 (the source side dropped), fe1 (``>= 2``), ud1 (object dtype),
e2 (the image shape not left out), tl1 (a held flock taken), ak1 / sk1 (the builder left out of the keys),
co3 (stage 1 alone), ms2 (an unheld byte unlocked).

Equivalent (6): wm3 (fork_rng dropped around the meta build: modules built on the meta device draw no CPU random
numbers; checked for Linear / Conv2d); e1 (``if True`` for the start-unit check: at the first unit the streams'
shapes are the images' shapes, so the set is empty anyway); na3 ('none' always: target classes all numbers
against source classes none of which is one cannot match, so 'some' is unreachable); na4 (``not missing``
dropped: nothing missing with numbered targets and named sources needs an empty target class list);
dd3 (``_no_addresses`` dropped around builder_source: code_text already strips addresses and a source file
holds one only as literal text); sd1 (a no-op rewrite of ``return None``, a mistake of the pass).

Left (1): ew1 (``_run_jobs_of`` passing only ``cfg.source`` to check_workers_reach): it needs a whole run
with workers 2 and a domain registered in the main block; check_workers_reach itself is tested in h_fc.
Killed since by tests/test_session78_h_fe.py (a run whose target domain is registered only in the main block).
"""
import re
import sys
import types

import pytest
import torch
from torch import nn

from transferkit.errors import TransferkitError

# ---- failures_message: the folder of the first traceback that was written (fm2) ---------------------------------

def test_failures_message_names_the_folder_of_a_written_traceback_after_one_that_was_not(tmp_path):
    from transferkit.jobs import JobFailure, failures_message
    lost = JobFailure("ValueError: a", "tb", None)
    lost.job, lost.path = "a", ""
    kept = JobFailure("ValueError: b", "tb", None)
    kept.job, kept.path = "b", str(tmp_path / "failed" / "b.txt")
    text = failures_message([lost, kept], 2, "kept", "again")
    assert f"tracebacks in {tmp_path / 'failed'}" in text and "could not be written" not in text


# ---- code_text: names, nested code, code inside tuples (ct2, ct3, ct4) ------------------------------------------

def _code(src: str, name: str = "f"):
    space = {}
    exec(compile(src, "<h_mut>", "exec"), space)
    return space[name].__code__


def test_code_text_counts_the_names_a_function_calls():
    from transferkit.data import code_text
    one, two = _code("def f(x):\n    return foo(x)\n"), _code("def f(x):\n    return bar(x)\n")
    assert one.co_code == two.co_code and one.co_consts == two.co_consts  # only the name differs
    assert code_text(one) != code_text(two)


def test_code_text_counts_a_nested_functions_body():
    from transferkit.data import code_text
    one = _code("def f():\n    def g():\n        return 1\n    return g\n")
    two = _code("def f():\n    def g():\n        return 2\n    return g\n")
    assert code_text(one) != code_text(two)
    assert code_text(one) == code_text(_code("def f():\n    def g():\n        return 1\n    return g\n"))


def test_code_text_reads_code_and_sets_inside_a_tuple_constant():
    from transferkit.data import code_text
    outer = _code("def f():\n    return 0\n")
    g1 = _code("def g():\n    return 1\n", "g")
    g2 = _code("def g():\n    return 2\n", "g")
    assert code_text(outer.replace(co_consts=((g1,),))) != code_text(outer.replace(co_consts=((g2,),)))
    members = [f"m{i}" for i in range(40)]
    text = code_text(outer.replace(co_consts=(("k", frozenset(members)),)))
    assert re.findall(r"m\d+", text) == sorted(members)  # the set's members sorted, within the tuple too


# ---- own_code: the source file, bases, a class without __module__ (oc2, oc4, oc5) -------------------------------

def _module_net(tmp_path, monkeypatch, sub: str, helper_body: str):
    import importlib.util

    from transferkit.backbones import from_sequential
    path = tmp_path / sub / "h_mut_mod.py"
    path.parent.mkdir()
    path.write_text("import torch\nfrom torch import nn\n\n\ndef helper(x):\n    return " + helper_body + "\n\n\n"
                    "class Act(nn.Module):\n    def forward(self, x):\n        return helper(x)\n")
    spec = importlib.util.spec_from_file_location("h_mut_mod", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "h_mut_mod", module)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return from_sequential(nn.Sequential(nn.Flatten(), module.Act(), nn.Linear(16, 3)), input_shape=(1, 4, 4),
                           verify=False)


def test_definition_digest_counts_a_helper_in_the_module_classes_source_file(tmp_path, monkeypatch):
    from transferkit.backbones import definition_digest
    a = definition_digest(_module_net(tmp_path, monkeypatch, "a", "torch.relu(x)"))
    b = definition_digest(_module_net(tmp_path, monkeypatch, "b", "torch.tanh(x)"))  # forward itself unchanged
    assert a != b


def _exec_classes(base_body: str):
    space = {"__name__": "h_mut_cell", "nn": nn, "torch": torch}  # a notebook cell: no source file
    exec("class Base(nn.Module):\n    def forward(self, x):\n        return " + base_body + "\n\n\n"
         "class Sub(Base):\n    pass\n", space)
    return space["Sub"]


def test_definition_digest_counts_a_base_classes_forward():
    from transferkit.backbones import definition_digest, from_sequential

    def net(body):
        torch.manual_seed(0)
        return from_sequential(nn.Sequential(nn.Flatten(), _exec_classes(body)(), nn.Linear(16, 3)),
                               input_shape=(1, 4, 4), verify=False)
    assert definition_digest(net("torch.relu(x)")) != definition_digest(net("torch.tanh(x)"))


def test_definition_digest_of_a_module_class_without_module_name():
    from transferkit.backbones import definition_digest, from_sequential
    cls = type("Anon", (nn.Module,), {"forward": lambda self, x: x})
    cls.__module__ = None
    net = from_sequential(nn.Sequential(nn.Flatten(), cls(), nn.Linear(16, 3)), input_shape=(1, 4, 4), verify=False)
    assert len(definition_digest(net)) == 16


# ---- main_only / _top_level / check_workers_reach (mo2, mo3, mo4, mo7, mo11, mo12, mo13) -------------------------

BLOCKS = '''
import contextlib
FLAG = 1
if len(sys.argv) > 99:
    pass
else:
    BACKBONES["in_else"] = f
    class InElse:
        pass
try:
    import no_such_module_h_mut
except ImportError:
    BACKBONES["in_except"] = f
    class InExcept:
        pass
finally:
    BACKBONES["in_finally"] = f
    class InFinally:
        pass
with contextlib.suppress(Exception):
    BACKBONES["in_with"] = f
    class InWith:
        pass
if FLAG == 1:
    BACKBONES["in_compare_if"] = f
    class InCompareIf:
        pass
if __name__ == "__main__":
    register("factory_method")
    BACKBONES["guarded"] = f
    class Guarded:
        pass
register("h_mut_top_method")
'''


def _made(qualname, cls=False):
    obj = type(qualname.rsplit(".", 1)[-1], (), {}) if cls else (lambda: None)
    obj.__module__, obj.__qualname__ = "__main__", qualname
    return obj


@pytest.fixture
def blocks_script(tmp_path, monkeypatch):
    script = tmp_path / "script.py"
    script.write_text(BLOCKS)
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))


@pytest.mark.parametrize("name", ["in_else", "in_except", "in_finally", "in_with", "in_compare_if"])
def test_main_only_reaches_a_builder_registered_in_any_top_level_block(blocks_script, name):
    from transferkit.preflight import main_only
    assert not main_only(_made("f"), name)
    assert main_only(_made("f"), "guarded")  # the main block alone: the check still refuses


@pytest.mark.parametrize("name", ["InElse", "InExcept", "InFinally", "InWith", "InCompareIf"])
def test_main_only_reaches_a_class_statement_in_any_top_level_block(blocks_script, name):
    from transferkit.preflight import main_only
    assert not main_only(_made(name, cls=True))
    assert main_only(_made("Guarded", cls=True))  # a class statement of the main block is not run by a worker


def test_main_only_reaches_a_factory_class_whose_name_is_registered_at_the_top_level(blocks_script):
    from transferkit.methods.base import Method
    from transferkit.preflight import check_workers_reach, main_only
    made = _made("factory.<locals>.Made", cls=True)
    assert not main_only(made, "h_mut_top_method")
    assert main_only(made, "factory_method")  # named only in the main block
    top = type("Made", (Method,), {"name": "h_mut_top_method", "__module__": "__main__"})
    top.__qualname__ = "factory.<locals>.Made"
    check_workers_reach([top], 2)  # its registered name is at the top level: reached
    guarded = type("Made", (Method,), {"name": "factory_method", "__module__": "__main__"})
    guarded.__qualname__ = "factory.<locals>.Made"
    with pytest.raises(TransferkitError, match="method 'factory_method'"):
        check_workers_reach([guarded], 2)


# ---- the config size cap: each value counted once, the container too, the bound inclusive (sr2, sr4) ------------

def test_the_config_size_cap_counts_every_value_and_allows_exactly_the_cap():
    from transferkit import config
    leaf = ["x"] * 999  # 1000 values, itself included
    shared = [leaf] * 999  # each alias expanded: 1 + 999 * 1000
    rest = config.MAX_CONFIG_VALUES - 1 - 999 * 1000
    assert rest > 0
    config._check_no_self_reference(shared + ["y"] * rest, "k", "--set k")  # exactly the cap: taken
    with pytest.raises(TransferkitError, match=f"expand to {config.MAX_CONFIG_VALUES + 1:,} values"):
        config._check_no_self_reference(shared + ["y"] * (rest + 1), "k", "--set k")


# ---- select_classes: a dict's keys are ordered, relabelled (sc1) -------------------------------------------------

def test_select_classes_relabels_a_dicts_keys_in_their_order():
    from test_session77_h_fa import named_toy
    d = named_toy()
    picked = d.select_classes({"owl": 1, "cat": 2}.keys())
    assert picked.class_names == ["owl", "cat"]
    with pytest.raises(TransferkitError, match="relabels the classes 0..n-1 in the given order"):
        d.select_classes({"owl", "cat"})


# ---- tap_units: a mapping is no list of units (tu1) ---------------------------------------------------------------

def test_tap_refuses_a_mapping_of_units_even_of_known_names():
    from helpers import seeded_lenet

    from transferkit.methods.tap import tap_units
    net = seeded_lenet()
    first = net.feature_names[0]
    assert tap_units(net, [first]) == [first]
    with pytest.raises(TransferkitError, match="tap: option units must be text or a list of texts or null"):
        tap_units(net, {first: 1})
    with pytest.raises(TransferkitError, match="tap: option units must be text or a list of texts or null, got 3"):
        tap_units(net, 3)  # a number alone is no list (not a TypeError of list(3))


# ---- _check_runs' fallback shape: only for a whole image_size (cr1) -----------------------------------------------

def _pooled(num_classes, in_channels=1, image_size=28):  # any size: no input_shape declared
    from transferkit.backbones import from_sequential
    return from_sequential(nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                         nn.Flatten(), nn.Linear(4, num_classes)))


def test_a_builder_without_input_shape_given_no_image_size_is_not_run_on_a_made_up_shape(monkeypatch):
    from transferkit.backbones import BACKBONES, build_backbone
    monkeypatch.setitem(BACKBONES, "h_mut_pooled", _pooled)
    net = build_backbone("h_mut_pooled", num_classes=3, image_size=None)
    assert net(torch.zeros(2, 1, 12, 12)).shape == (2, 3)


def _big_kernel(num_classes, in_channels=1, image_size=28):  # runs at from_modules' guessed 224, not at 8 px
    from collections import OrderedDict

    from transferkit.backbones import from_modules
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(in_channels, 2, 9), pool=nn.AdaptiveAvgPool2d(1),
                                      flat=nn.Flatten(), fc=nn.Linear(2, num_classes)))
    return from_modules(model, ["conv", "pool"], "fc")


def test_a_guessed_input_shape_is_not_what_a_builders_network_is_run_on(monkeypatch):
    from transferkit.backbones import BACKBONES, build_backbone
    assert getattr(_big_kernel(3), "input_shape_guessed", False)
    monkeypatch.setitem(BACKBONES, "h_mut_big_kernel", _big_kernel)
    assert build_backbone("h_mut_big_kernel", num_classes=3, image_size=16)(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
    with pytest.raises(TransferkitError, match=r"fails on the images it is built for .*\(1, 8, 8\)"):
        build_backbone("h_mut_big_kernel", num_classes=3, image_size=8)


# ---- a run whose failed job's traceback cannot be written: results.json keeps it without one (ex1) ---------------

def test_a_failed_job_without_a_written_traceback_is_kept_in_results_json(tmp_path, monkeypatch):
    from test_experiment_second_mutation import run_failing_seed_1

    from transferkit import jobs
    real_write = jobs.write_text

    def no_failed_folder(path, text):
        if "failed" in path.parts:
            raise PermissionError(13, "Permission denied", str(path))
        return real_write(path, text)
    monkeypatch.setattr(jobs, "write_text", no_failed_folder)
    _, _, failed, message = run_failing_seed_1(tmp_path, monkeypatch)
    assert re.search("1 of 2 job.*tracebacks above", message)
    assert failed == [{"job": "target_only seed 1", "error": "ValueError: boom on seed 1", "traceback": None}]


def _lazy(num_classes, in_channels=1, image_size=28):
    from transferkit.backbones import from_sequential
    return from_sequential(nn.Sequential(nn.Conv2d(in_channels, 2, 3), nn.Flatten(), nn.LazyLinear(num_classes)),
                           verify=False)


def test_a_builders_network_with_lazy_parameters_is_left_to_the_engine(monkeypatch):
    from transferkit.backbones import BACKBONES, build_backbone
    monkeypatch.setitem(BACKBONES, "h_mut_lazy", _lazy)
    net = build_backbone("h_mut_lazy", num_classes=3, image_size=8)
    assert any(nn.parameter.is_lazy(p) for p in net.parameters())  # not materialised by a check on made-up images


# ---- _numbered_against_named: all target classes numbers, no source class one (na1, na2) --------------------------

@pytest.mark.parametrize("head, target", [(["cat", "dog"], ["0", "cow"]), (["0", "1"], ["5", "6"])])
def test_classes_not_all_numbers_against_names_are_refused_as_absent_not_as_numbered(head, target):
    from transferkit.fitting import source_head_rows
    from transferkit.methods import get_method
    with pytest.raises(TransferkitError, match="absent from the source") as e:
        source_head_rows(get_method("dann"), head, 2, target)
    assert "numbers" not in str(e.value)


# ---- episodes: one query fits the smaller K (fe1) ------------------------------------------------------------------

def test_episodes_offer_a_single_query_for_the_smaller_k():
    from transferkit.domain import Domain
    from transferkit.fewshot_eval import _check_episodes_fit
    labels = torch.arange(3).repeat_interleave(6)  # 6 images per class: 5 shots leave one query
    test = Domain("t", torch.zeros(len(labels), 1, 4, 4), labels, ["a", "b", "c"])
    with pytest.raises(TransferkitError, match=r"--n-query 1 fits it for 5-shot, not for 6-shot"):
        _check_episodes_fit(test, 3, [5, 6], 15)
    _check_episodes_fit(test, 3, [5], 1)  # what it offers fits


# ---- npz labels: an object array of names is named as class names too (ud1) --------------------------------------

def test_labels_of_python_strings_say_how_to_turn_names_into_ids():
    import numpy as np

    from transferkit.userdata import _int_vector
    with pytest.raises(TransferkitError, match=r"'y' must hold integers \(class ids\), got dtype object"):
        _int_vector(np.array(["cat", "dog"], dtype=object), "y", 2, "d.npz")


# ---- the engine's activation_shapes leave out the images' own shape (e2) -----------------------------------------

def test_a_frozen_unit_that_keeps_the_image_shape_does_not_refuse_images():
    from helpers import toy_domain
    from test_session77_h_fc import _head_only

    from transferkit.backbones import from_sequential
    from transferkit.engine import Engine, TrainConfig
    torch.manual_seed(0)
    net = from_sequential(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1),  # 1 x 28 x 28 in and out
                                        nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1)),
                                        nn.Flatten(), nn.Linear(4, 4)), units=[1, 2], input_shape=(1, 28, 28))
    seen = []

    def calls(m, x):
        seen.append(m.net(torch.zeros(1, 1, 28, 28)).shape)  # images, in training: not refused
        return m.forward_from_input(x)
    Engine(TrainConfig(steps=2, batch_size=8)).fit(_head_only(calls)(net), target=toy_domain(16))
    assert seen and all(s == (1, 4) for s in seen)


# ---- _try_lock: False while another open file holds the lock (tl1) -------------------------------------------------

def test_try_lock_is_refused_while_another_descriptor_holds_the_lock(tmp_path):
    import os

    from transferkit import io
    if io.fcntl is None:
        pytest.skip("flock")
    path = tmp_path / "x.lock"
    held, other = os.open(path, os.O_RDWR | os.O_CREAT), os.open(path, os.O_RDWR)
    try:
        assert io._try_lock(held)
        assert not io._try_lock(other)  # flock: another open file description waits
        os.close(held)
        held = None
        assert io._try_lock(other)
    finally:
        for fd in (held, other):
            if fd is not None:
                os.close(fd)


# ---- Transfer's pre-training memo is keyed by a plugin builder's code (ak1) ----------------------------------------

def _plug(extra: str):
    """A plugin's builder ``build`` as its file defines it, ``extra`` a line that leaves its network as it was."""
    space = {"__name__": "h_mut_plugin"}
    exec("from transferkit.backbones import build_backbone\n\n\n"
         "def build(num_classes, in_channels=1, image_size=28):\n"
         f"    {extra}\n    return build_backbone('lenet', num_classes, in_channels, image_size)\n", space)
    return space["build"]


def test_a_plugin_builder_changed_in_place_pretrains_again(monkeypatch, one_thread):
    from helpers import toy_domain
    from test_api_mutation import ONE

    from transferkit import Transfer, api
    from transferkit.backbones import BACKBONES
    runs, real = [], api.Engine

    def engine(*a, **kw):
        runs.append(kw.get("run_name"))
        return real(*a, **kw)
    monkeypatch.setattr(api, "Engine", engine)
    monkeypatch.setitem(BACKBONES, "h_mut_plug", _plug("pass"))
    t = Transfer("finetune", backbone="h_mut_plug", train=ONE, pretrain=ONE)
    source, target = toy_domain(16, classes=4), toy_domain(8)
    t.fit(target=target, source=source)
    t.fit(target=target, source=source)  # the same builder: the memo's weights
    assert runs.count("pre-training") == 1
    monkeypatch.setitem(BACKBONES, "h_mut_plug", _plug("image_size = int(image_size)"))  # edited
    t.fit(target=target, source=source)
    assert runs.count("pre-training") == 2


def test_a_runs_cached_source_network_is_keyed_by_a_plugin_builders_code(tmp_path, monkeypatch, one_thread):
    from test_experiment_second_mutation import TWO, _npz

    from transferkit.backbones import BACKBONES
    from transferkit.config import ExperimentConfig
    from transferkit.rundata import prepare_domains
    from transferkit.source import pretrain_source
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(BACKBONES, "h_mut_plug", _plug("pass"))
    data = _npz(tmp_path)
    cfg = ExperimentConfig(name="f", source=f"npz:{data}", target=f"npz:{data}", methods=["target_only"], k=1,
                           backbone="h_mut_plug", select_on="none", pretrain=TWO, train=TWO, out_dir=str(tmp_path))
    prepared, quiet = prepare_domains(cfg), {"log": lambda *a: None}
    first = pretrain_source(cfg, prepared, **quiet)[1]
    assert pretrain_source(cfg, prepared, **quiet)[1]["cached"]
    monkeypatch.setitem(BACKBONES, "h_mut_plug", _plug("image_size = int(image_size)"))  # edited in place
    info = pretrain_source(cfg, prepared, **quiet)[1]
    assert not info["cached"] and info["path"] != first["path"]


# ---- check_own_modules_take runs a two-stage translation's losses of both stages, the translator's first (co2, co3)

def test_own_modules_are_probed_in_both_stages_of_a_two_stage_translation():
    from transferkit.backbones import build_backbone
    from transferkit.domain import Domain
    from transferkit.methods.base import METHODS
    from transferkit.preflight import check_own_modules_take
    stages = []

    def losses(self, batch):
        stages.append(self.stage)
        return {}
    probe = type("Probe", (METHODS["adain"],), {"name": "h_mut_probe", "losses": losses})
    method = probe(build_backbone("resnet18", num_classes=2))
    rect = Domain("rect", torch.rand(4, 1, 28, 36), torch.arange(4) % 2, ["a", "b"])  # another size than 28 x 28
    check_own_modules_take(method, {"source": rect, "target": rect, "unlabeled": rect}, 2)
    assert stages == [1, 2] and method.stage == 2  # the method itself is left as it was


# ---- waiting_lock with msvcrt: a wait given up unlocks nothing it does not hold (ms2) ------------------------------

def test_without_fcntl_a_wait_given_up_unlocks_no_byte(tmp_path, monkeypatch):
    from test_session77_h_fb import _FakeMsvcrt

    from transferkit import io
    fake = _FakeMsvcrt(busy=10**6)  # another process holds it throughout
    monkeypatch.setattr(io, "fcntl", None)
    monkeypatch.setattr(io, "msvcrt", fake, raising=False)

    def give_up(holder):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        with io.waiting_lock(tmp_path / "x.lock", give_up, poll_s=0):
            pass
    assert fake.calls and all(mode == fake.LK_NBLCK for mode, _, _ in fake.calls)
