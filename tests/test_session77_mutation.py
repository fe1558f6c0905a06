"""Session 77 mutation pass (h_mut): tests that kill the hand-made mutants of this session's library change
(``git diff 728452f..HEAD -- transferkit``) that the session's own tests let through.

Mutants tried: see the report list at the end of this docstring (filled in below).
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
