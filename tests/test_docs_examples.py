"""The documentation's examples stay true: every ```python block of README.md and docs/*.md
compiles, the fast ones run (with budgets cut by the replacements named next to each test, never
by editing the docs), the ```yaml blocks load as run configs, and every `transferkit SUB --flag`,
`transferkit bench NAME`, `--set key=value` and method name the docs mention is known to the
CLI's parser (transferkit/cli.py), the benchmark plans and the method registry."""

import dataclasses
import pathlib
import re
import shlex

import pytest
import torch

import transferkit
from transferkit.cli import build_parser
from transferkit.methods.base import check_options, get_method

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```(\w*)[ \t]*$")


def blocks(lang: str) -> list[tuple[str, int, str]]:
    """(file, line of the opening fence, code without the fence's indentation) of each ``lang`` block."""
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if m and m.group(2):
                indent, kind, start, body = len(m.group(1)), m.group(2), i + 1, []
                i += 1
                while not re.match(r"^ *```\s*$", lines[i]):
                    body.append(lines[i][indent:])
                    i += 1
                if kind == lang:
                    found.append((str(path.relative_to(ROOT)), start, "\n".join(body) + "\n"))
            i += 1
    return found


PYTHON = {f"{f}:{n}": code for f, n, code in blocks("python")}


def block(doc: str, snippet: str) -> str:
    """The one ```python block of ``doc`` that holds ``snippet`` (found by content, so that the tests
    follow a block the docs move; one executed test per block the file runs)."""
    found = [code for key, code in PYTHON.items() if key.rpartition(":")[0] == doc and snippet in code]
    assert len(found) == 1, f"{len(found)} ```python blocks of {doc} hold {snippet!r}"
    return found[0]


def patched(code: str, *replacements: tuple[str, str]) -> str:
    """``code`` with each (old, new) replaced; each old must be there (else the docs changed)."""
    for old, new in replacements:
        assert old in code, f"{old!r} is no longer in the block"
        code = code.replace(old, new)
    return code


def run_block(code: str, **names) -> dict:
    namespace = {"__name__": "__main__", **names}
    exec(compile(code, "<doc block>", "exec"), namespace)
    return namespace


@pytest.fixture
def small_budget(monkeypatch):
    """Every ``Transfer`` trains and pre-trains a few steps (the docs' budgets take minutes)."""
    init = transferkit.Transfer.__init__

    def capped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for attr in ("train_cfg", "pretrain_cfg"):
            setattr(self, attr, dataclasses.replace(getattr(self, attr), steps=3, eval_every=3, batch_size=8,
                                                    progress=False))
    monkeypatch.setattr(transferkit.Transfer, "__init__", capped)


@pytest.fixture
def registries():
    """Methods and domains a block registers are forgotten afterwards."""
    from transferkit.data import BUILTINS
    from transferkit.methods.base import METHODS, load_outside_families
    load_outside_families()
    before = [(r, dict(r)) for r in (METHODS, BUILTINS)]
    yield
    for registry, old in before:
        for name in set(registry) - set(old):
            del registry[name]


def toy(n, seed, classes=4):
    from helpers import toy_domain
    return toy_domain(n, seed=seed, classes=classes)


# ---------------------------------------------------------------- python blocks

#: (doc, snippet) of the block each test below runs: a new ```python block fails the test after this one
#: until a test runs it (or it is named here with a reason it can only be compiled)
EXECUTED = [("README.md", "TrainConfig(steps=300)"), ("README.md", "markdown_table(summarize"),
            ("README.md", "map_at_k(feats"), ("README.md", 'transferkit.load_model("runs/demo'),
            ("README.md", "prepare_domains(load_config"), ("README.md", 'torch.save(model, "model.pt")'),
            ("README.md", 'register_domain("thickflip"'), ("docs/architecture.md", "class MyMethod(Method)"),
            ("docs/adaptation.md", 'Transfer("multilayer_adv"'),
            ("docs/adaptation.md", "adaptation_epochs(prepare_domains"),
            ("docs/finetuning.md", 'Transfer("flex"'), ("docs/finetuning.md", "mnist_halves()[1]"),
            ("docs/zeroshot.md", 'captions_file="data/captions.csv"'), ("docs/zeroshot.md", "encode_texts(captions)"),
            ("docs/architecture.md", "class MeanMatch(AdaptationMethod)")]  # run by tests/test_session77_h_fc.py


def test_the_docs_hold_their_python_blocks_and_every_one_compiles():
    assert len(PYTHON) >= 14, sorted(PYTHON)
    for key, code in PYTHON.items():
        compile(code, key, "exec")  # a SyntaxError names the block


def test_every_python_block_is_run_by_a_test():
    covered = {k for doc, snippet in EXECUTED for k, code in PYTHON.items()
               if k.rpartition(":")[0] == doc and snippet in code}
    assert covered == set(PYTHON), f"no test runs {sorted(set(PYTHON) - covered)}"


def test_readme_python_api_block(one_thread, small_budget, capsys):
    """README "Python API": syndigits -> mnist with TrainConfig(steps=300) cut to 3 steps."""
    code = patched(block("README.md", "TrainConfig(steps=300)"), ("TrainConfig(steps=300)", "TrainConfig(steps=3)"))
    ns = run_block(code)
    score = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= score <= 1.0  # "accuracy in [0, 1]"
    model, test = ns["model"], ns["target"].test
    ids = model.predict(test[::125].images)
    assert len(ids) == len(test[::125]) and all(0 <= int(i) < len(model.classes_) for i in ids)
    assert sorted(test[::125].labels.tolist()) == list(range(10))  # "one image of each class (125 each)"


def test_readme_summary_table_block(one_thread, small_budget, capsys):
    """README: a table of one's own fits (``fitted`` and ``target`` are the reader's: two tiny fits here)."""
    from transferkit.splits import Split
    target = Split(toy(24, 1), toy(8, 2), toy(16, 3))
    fitted = {(m, s): transferkit.Transfer(m, backbone="lenet", seed=s).fit(target=target.train, val=target.val,
                                                                             source=toy(32, 0))
              for m in ("finetune", "linear_probe") for s in (0, 1)}
    run_block(block("README.md", 'markdown_table(summarize'), fitted=fitted, target=target)
    table = capsys.readouterr().out
    assert "| finetune" in table and "| linear_probe" in table


def test_readme_evaluation_helpers_block(tmp_path, monkeypatch, capsys, fake_tsne):
    """README: classification_report, mean_se, map_at_k, evaluate_episodes, tsne_embeddings, verbatim
    (scikit-learn's t-SNE faked by conftest's fake_tsne)."""
    import matplotlib.figure
    monkeypatch.chdir(tmp_path)
    ns = run_block(block("README.md", 'map_at_k(feats'))
    out = capsys.readouterr().out.splitlines()
    assert 0.0 <= float(out[0]) <= 1.0
    mean, se = eval(out[1])  # "(mean, standard error)"
    assert mean == pytest.approx(0.8166, abs=1e-3) and se > 0
    assert (tmp_path / "tsne.png").is_file() and isinstance(ns["fig"], matplotlib.figure.Figure)
    assert len(fake_tsne) == 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run of source_only, finetune and dann (mnist -> digits, a few steps), as the
    README's blocks on run directories read one."""
    from transferkit.config import ExperimentConfig
    from transferkit.engine import TrainConfig
    from transferkit.experiment import run_experiment
    small = TrainConfig(steps=2, eval_every=2, batch_size=8, progress=False)
    cfg = ExperimentConfig(name="docs", source="mnist", target="digits", backbone="lenet", k=2, repeats=1,
                           methods=["source_only", "finetune", "dann"], select_on="none", pretrain=small,
                           train=small, out_dir=str(tmp_path_factory.mktemp("runs")))
    run_dir, rows = run_experiment(cfg, log=lambda *a: None)
    return run_dir, rows


def test_readme_load_model_block(tiny_run, one_thread, tmp_path):
    """README "To use a trained model": its run path replaced by a tiny run's; ``images`` and
    ``domain`` (the reader's) are that run's target test split; ``new_images/`` three PNG files of another
    size, ``predictions.csv`` in ``tmp_path``."""
    import csv

    from PIL import Image

    from transferkit.config import load_config
    from transferkit.experiment import prepare_domains
    run_dir, _ = tiny_run
    test = prepare_domains(load_config(run_dir / "config.yaml")).target.test
    (tmp_path / "new").mkdir()
    for i in range(3):
        Image.new("L", (16, 16), 60 * i).save(tmp_path / "new" / f"f{i}.png")
    code = patched(block("README.md", 'transferkit.load_model("runs/demo'),
                   ("runs/demo/20261129-101500-123456", str(run_dir)), ("new_images", str(tmp_path / "new")),
                   ('"predictions.csv"', repr(str(tmp_path / "predictions.csv"))))
    ns = run_block(code,
                   images=test.images[:20], domain=test)
    assert ns["logits"].shape == (20, len(ns["names"]))
    rows = list(csv.reader(open(tmp_path / "predictions.csv")))
    assert rows[0] == ["file", "class"] and [r[0] for r in rows[1:]] == [str(tmp_path / "new" / f"f{i}.png")
                                                                         for i in range(3)]
    assert all(r[1] in ns["fitted"].classes_ for r in rows[1:])
    assert not ns["model"].training  # "eval mode"
    assert torch.equal(ns["fitted"].predict(test.images[:20]), ns["logits"].argmax(1))


def test_readme_tsne_of_a_run_block(tiny_run, one_thread, tmp_path, monkeypatch, fake_tsne):
    """README: a t-SNE before and after adaptation; its run path replaced by a tiny run's."""
    monkeypatch.chdir(tmp_path)
    run_dir, _ = tiny_run
    code = patched(block("README.md", "prepare_domains(load_config"), ("runs/uda/20261129-101500-123456", str(run_dir)))
    ns = run_block(code)
    assert (tmp_path / "tsne.png").is_file() and set(ns["panels"]) == {"before", "after"}
    assert len(ns["source"]) == 300 and len(fake_tsne) == 2


def test_readme_pickled_transfer_block(one_thread, small_budget, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = transferkit.Transfer("linear_probe", backbone="lenet").fit(target=toy(16, 1), source=toy(32, 0))
    x = toy(8, 2).images
    ns = run_block(block("README.md", 'torch.save(model, "model.pt")'), model=model, torch=torch)
    assert ns["model"] is not model and torch.equal(ns["model"].predict(x), model.predict(x))


def test_readme_register_domain_block(registries):
    """README "Adding a domain", verbatim: the decorated builder becomes a domain name."""
    run_block(block("README.md", 'register_domain("thickflip"'))
    d = transferkit.load_domain("thickflip", size=None)  # its own size; load_domain's default resizes to 28
    assert len(d) == 1797 and tuple(d.images.shape[1:]) == (1, 8, 8) and d.class_names[3] == "3"


def test_architecture_method_contract_block(registries, capsys):
    """docs/architecture.md "The method contract", verbatim: the class registers as my_method, and
    `transferkit methods my_method` lists its option."""
    from transferkit.cli import main
    run_block(block("docs/architecture.md", 'class MyMethod(Method)'))
    cls = get_method("my_method")
    assert cls.streams == ("source", "unlabeled") and cls.needs_pretrained
    assert main(["methods", "my_method"]) in (0, None)
    assert "weight" in capsys.readouterr().out


def test_adaptation_usage_block(one_thread, small_budget, capsys):
    """docs/adaptation.md: multilayer_adv in Python, on toy domains, 3 steps (``source_domain``,
    ``target_domain`` and ``target_test`` are the reader's)."""
    block_code = patched(block("docs/adaptation.md", 'Transfer("multilayer_adv"'),
                         ("model.score(target_test)", "print(model.score(target_test))"))
    run_block(block_code, source_domain=toy(32, 0), target_domain=toy(32, 1), target_test=toy(16, 2))
    assert 0.0 <= float(capsys.readouterr().out.split()[-1]) <= 1.0


def test_adaptation_conv_discriminator_block(one_thread, tmp_path, monkeypatch):
    """docs/adaptation.md: reproducing the convolutional discriminator, with ``Budget()`` cut to one
    seed, 2 pre-training steps and one epoch of batches of 512, on the mnist -> digits pair only."""
    monkeypatch.chdir(tmp_path)
    import json
    code = patched(block("docs/adaptation.md", 'adaptation_epochs(prepare_domains'),
                   ("b = Budget()", "b = Budget(seeds=(0,), pretrain_steps=2, adapt_steps=1, batch_size=512)"),
                   ('[("syndigits", "mnist"), ("mnist", "digits")]', '[("mnist", "digits")]'))
    run_block(code)
    results = json.loads((tmp_path / "runs/uda-conv-disc/mnist-digits/s0/results.json").read_text())
    assert results["config"]["options"] == {"multilayer_adv": {"discriminator": "conv"}}
    assert [r["method"] for r in results["rows"]] == ["multilayer_adv"]


def test_finetuning_flex_usage_block(one_thread, small_budget):
    """docs/finetuning.md "Usage": flex on toy domains, 3 steps per candidate, ``workers=2`` run as
    ``workers=1`` (spawning processes costs seconds); ``few``, ``src`` and ``val`` are the reader's."""
    code = patched(block("docs/finetuning.md", 'Transfer("flex"'), ("workers=2)", "workers=1)"))
    ns = run_block(code, few=toy(16, 1), src=toy(32, 0), val=toy(16, 2))
    extra = ns["model"].method_.extra_results()
    assert {"picked", "candidate_val_accuracy", "candidate_val_loss", "candidate_steps", "selection"} <= set(extra)
    assert extra["picked"] in extra["candidate_val_accuracy"]


def test_finetuning_tap_block(one_thread, tmp_path, monkeypatch):
    """docs/finetuning.md: tap on a flex benchmark's source network (an untrained lenet written
    where the block reads it), 5 training images per class instead of 30."""
    from safetensors.torch import save_file

    from transferkit.backbones import build_backbone
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/bench-flex/v5").mkdir(parents=True)
    save_file(build_backbone("lenet", 10, in_channels=3, image_size=28).state_dict(),
              str(tmp_path / "runs/bench-flex/v5/source.safetensors"))
    code = patched(block("docs/finetuning.md", 'mnist_halves()[1]'), ("split.train, 30, 0)", "split.train, 5, 0)"),
                   ("tap(net, ", "rows = tap(net, "))
    rows = run_block(code)["rows"]
    assert [r["unit"] for r in rows][:2] == ["conv1", "conv2"]  # "one row per unit", in network order
    assert all({"svm_accuracy", "softmax_accuracy"} <= set(r) for r in rows)


@pytest.mark.filterwarnings("ignore:fit. pretrain= is not used")  # small_budget's pretrain=, which clip does not take
@pytest.mark.filterwarnings("ignore:clip. the text extra is not installed")  # the hashing encoder without the extra
def test_zeroshot_captions_file_and_instance_retrieval_blocks(one_thread, small_budget, tmp_path, monkeypatch):
    """docs/zeroshot.md: clip from an image folder and a captions CSV (written here: 2 classes of 6
    images), then the instance-level retrieval block on the fitted model (``m``, ``images``,
    ``captions`` and ``image_of_caption`` are the reader's)."""
    from PIL import Image

    from transferkit.clip import recall_at_k
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    lines = ["file_name,text"]
    for c, word in enumerate(("zero", "one")):
        (tmp_path / "data/photos" / word).mkdir(parents=True)
        for i in range(6):
            pixels = (torch.rand(28, 28, generator=g) * 100 + 120 * c).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / f"data/photos/{word}/{i}.png")
            lines.append(f"{word}/{i}.png,a photo of a {word} number {i}")
    (tmp_path / "data/captions.csv").write_text("\n".join(lines) + "\n")
    code = patched(block("docs/zeroshot.md", 'captions_file="data/captions.csv"'),
                   ('Transfer("clip"', 'm = Transfer("clip"'))
    m = run_block(code, Transfer=transferkit.Transfer, load_domain=transferkit.load_domain)["m"]
    assert sorted(m.classes_) == ["one", "zero"]  # the source folder's classes
    photos = transferkit.load_domain("folder:data/photos")
    captions = [f"a photo of a {photos.class_names[int(y)]}" for y in photos.labels]
    ns = run_block(block("docs/zeroshot.md", 'encode_texts(captions)'), m=m, images=photos.images, captions=captions,
                   image_of_caption=torch.arange(len(captions)), torch=torch, recall_at_k=recall_at_k)
    assert set(ns["i2t"]) == {"R@1", "R@5", "R@10"} and set(ns["t2i"]) == {"R@1", "R@5", "R@10"}
    assert all(0.0 <= v <= 1.0 for v in [*ns["i2t"].values(), *ns["t2i"].values()])


# ---------------------------------------------------------------- yaml blocks and the CLI

def test_yaml_blocks_load_as_run_configs(tmp_path):
    from transferkit.config import load_config
    found = blocks("yaml")
    assert len(found) >= 4
    for f, n, code in found:
        path = tmp_path / "c.yaml"
        path.write_text(code)
        cfg = load_config(path)  # an unknown key is an error
        assert cfg.methods, f"{f}:{n}"
        for name in cfg.methods:  # each method is registered and its options are its own
            check_options(get_method(name), cfg.options.get(name, {}))


def _commands() -> list[tuple[str, int, str]]:
    """(file, line, command) of each `transferkit ...` code span and each shell-block line running it
    (lines continued with a backslash joined)."""
    found = []
    for path in DOCS:
        kind, pending = None, ""
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = FENCE.match(line) or re.match(r"^ *```(\w*)", line)
            if m:
                kind = None if kind is not None else (m.groups()[-1] or "text")
                continue
            where = str(path.relative_to(ROOT))
            if kind in ("bash", "sh", "shell", "console", "text"):
                line = pending + line.strip()
                if line.endswith("\\"):
                    pending = line[:-1] + " "
                    continue
                pending = ""
                for cmd in re.findall(r"(?:^|[;&|(]\s*|\s)(transferkit\s+[^#;&|)]*)", line):
                    found.append((where, n, cmd.strip()))
            elif kind is None:
                found += [(where, n, c.strip()) for c in re.findall(r"`(transferkit\s[^`]*)`", line)]
    return found


def _subparsers():
    parser = build_parser()
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def test_every_documented_subcommand_and_flag_is_known_to_the_parser():
    subs, commands, wrong = _subparsers(), _commands(), []
    assert len(commands) >= 100 and {c.split()[1] for _, _, c in commands} >= {"run", "bench", "report", "summary",
                                                                                  "methods", "episodes", "domains"}
    for f, n, cmd in commands:
        words = cmd.split()
        sub = words[1]
        if sub.startswith("-"):
            known = {o for a in build_parser()._actions for o in a.option_strings}
            wrong += [f"{f}:{n} {sub}"] if sub not in known else []
            continue
        if sub not in subs:
            wrong.append(f"{f}:{n} unknown subcommand {sub!r}: {cmd}")
            continue
        known = {o for a in subs[sub]._actions for o in a.option_strings}
        wrong += [f"{f}:{n} {sub} has no {w.split('=')[0]}: {cmd}" for w in words[2:]
                  if re.fullmatch(r"--[a-z][a-z0-9-]*", w.split("=")[0]) and w.split("=")[0] not in known]
    assert not wrong, "\n".join(wrong)


def test_every_documented_benchmark_name_exists():
    from transferkit.bench import make_plan
    named = {re.match(r"transferkit bench (\S+)", c).group(1) for _, _, c in _commands()
             if re.match(r"transferkit bench [a-z_]+\b", c)}
    assert {"uda", "flex", "fewshot", "zeroshot", "represent", "list"} <= named
    for name in sorted(named - {"list"}):
        make_plan(name)  # an unknown benchmark is an error naming the known ones


#: documented `--set` commands that need what the text around them sets up (a plugin's domain or
#: method, a data file) or that show a placeholder; their keys are still checked below
NEEDS_CONTEXT = ("thickflip", "my_method", "npz:data/", "bench NAME")


def test_every_documented_set_override_is_accepted():
    """Each documented `transferkit run|bench ... --set key=value` is accepted by load_config / the
    benchmark's plan, as the CLI reads them (unknown keys and bad values are errors)."""
    from transferkit.bench import make_plan
    from transferkit.config import load_config
    checked = 0
    for f, n, cmd in _commands():
        words = shlex.split(cmd)
        sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
        if not sets or words[1] not in ("run", "bench"):
            continue
        if any(s in cmd for s in NEEDS_CONTEXT):
            if words[1] == "bench" and words[2] != "NAME":
                fields = {fl.name for fl in dataclasses.fields(make_plan(words[2]))}
                assert {s.split("=")[0] for s in sets} <= fields, f"{f}:{n} {cmd}"
            continue
        if words[1] == "run":
            files = [w for w in words[2:] if w.endswith(".yaml") and (ROOT / w).is_file()]
            load_config(ROOT / files[0] if files else None, sets)
        else:
            make_plan(words[2], "--quick" in words, sets)
        checked += 1
    assert checked >= 30


def _documented_method_names() -> set[tuple[str, int, str]]:
    found = set()
    for path in DOCS:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = str(path.relative_to(ROOT))
            for m in re.finditer(r"methods(?::\s*|=)'?\[([^\]]*)\]", line):
                found |= {(where, n, x.strip(" '\"")) for x in m.group(1).split(",") if x.strip(" '\"")}
            for m in re.finditer(r"--set '?methods=([a-z_0-9:,]+)", line):
                found |= {(where, n, x) for x in m.group(1).split(",") if x}
            for m in re.finditer(r"(?:Transfer|get_method)\(\"([a-z_0-9:]+)\"", line):
                found.add((where, n, m.group(1)))
            for m in re.finditer(r"transferkit methods ([a-z_][a-z_0-9 ]*)", line):
                found |= {(where, n, x) for x in m.group(1).split() if x.islower()}
    return found


#: names in method lists that stand for the reader's own (the docs' examples of a plugin or a placeholder)
OWN_METHODS = {"my_method", "...", "NAME", "a", "b", "mine"}


def test_every_documented_method_name_is_registered():
    names = _documented_method_names()
    assert len({x for _, _, x in names}) >= 15
    unknown = []
    for f, n, name in sorted(names):
        if name in OWN_METHODS or name.endswith("..."):
            continue
        try:
            get_method(name)
        except Exception as e:  # noqa: BLE001 - the registry's error names the method
            unknown.append(f"{f}:{n} {name}: {e}")
    assert not unknown, "\n".join(unknown)


def test_the_listing_commands_run(capsys):
    from transferkit.cli import main
    assert main(["bench", "list"]) in (0, None)
    assert "uda " in capsys.readouterr().out
    assert main(["methods"]) in (0, None)
    out = capsys.readouterr().out
    assert all(f"\n{m} " in out for m in ("dann", "multilayer_adv", "flex", "tap", "clip"))


def test_every_documented_flag_is_a_transferkit_flag():
    """Every `--flag` the docs name, in code or prose, is one of the CLI's (or of the other tools
    they show: torchrun's --standalone, timeout's --preserve-status, tensorboard's --logdir)."""
    subs = _subparsers()
    known = {o for p in (build_parser(), *subs.values()) for a in p._actions for o in a.option_strings}
    foreign = {"--standalone", "--preserve-status", "--logdir", "--sdist"}  # torchrun, timeout, tensorboard, build
    named = {(m.group(1), str(path.relative_to(ROOT))) for path in DOCS
             for m in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9-]*[a-z0-9])", path.read_text())}
    assert {"--set", "--resume", "--workers", "--quick", "--print-plan", "--n-way"} <= {f for f, _ in named}
    assert not sorted((f, where) for f, where in named if f not in known | foreign)


def _config_table() -> list[tuple[list[str], str]]:
    """(keys, default) of each row of the README's table of run config keys."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| key | default | meaning |"):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("| `"):
            break
        keys, default = line.split(" | ")[:2]
        rows.append((re.findall(r"`([a-z_]+)`", keys), default))
    return rows


def test_readme_config_table_names_every_key_with_its_default():
    from transferkit.config import ExperimentConfig
    cfg, rows = ExperimentConfig(), _config_table()
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    assert {k for keys, _ in rows for k in keys} == fields  # no key missing, none made up
    checked = 0
    for keys, default in rows:
        values = [v.strip(" `") for v in default.split(" (")[0].split(", ")]
        if len(values) != len(keys) or any(v in ("all", "auto", "see below", "the four above") for v in values):
            continue
        for key, text in zip(keys, values):
            assert str(getattr(cfg, key)) == {"null": "None"}.get(text, text), (key, default)
            checked += 1
    assert checked >= 18
    assert (cfg.train.steps, cfg.pretrain.steps, cfg.train.eval_every, cfg.pretrain.eval_every) == (300, 600, 25, 100)


def test_method_tables_name_registered_methods():
    """The first column of the docs' method tables (adaptation, few-shot, fine-tuning) names methods."""
    names = set()
    for name in ("adaptation", "fewshot", "finetuning"):
        for line in (ROOT / "docs" / f"{name}.md").read_text().splitlines():
            m = re.match(r"^\| `([a-z_0-9]+)`(?:, `([a-z_0-9]+)`)?(?: \(= `([a-z_0-9]+)`\))? \|", line)
            names |= {x for x in (m.groups() if m else ()) if x}
    assert len(names) >= 30
    for name in sorted(names):
        get_method(name)


#: (callable, its signature as the docs write it): the docs' parameter names, in order, with their defaults
DOCUMENTED_SIGNATURES = [
    ("transferkit.register_domain", "register_domain(name, build, *, channels,\nsize, class_names, description, "
                                    "origin=None, num_images=None)"),
    ("transferkit.load_network", "load_network(path, backbone, in_channels=None, image_size=28)"),
    ("transferkit.retrieval.retrieval_map", "retrieval_map(source_net,\ntuned_net, source_val, target_test, k=10, "
                                            "gallery=None)"),
    ("transferkit.zeroshot.zero_shot_report", "zero_shot_report(scores, labels, seen, unseen, gamma=0)"),
    ("transferkit.zeroshot.prior_matched_gamma", "prior_matched_gamma(scores, seen, unseen)"),
    ("transferkit.clip.recall_at_k", "recall_at_k(sim, relevant, ks)"),
    ("transferkit.methods.tap.tap", "tap(net, train, test)"),
]


@pytest.mark.parametrize("target, documented", DOCUMENTED_SIGNATURES, ids=[t for t, _ in DOCUMENTED_SIGNATURES])
def test_documented_signatures(target, documented):
    import importlib
    import inspect
    text = "\n".join(p.read_text() for p in DOCS)
    assert documented in text or documented.replace("\n", " ") in text, "the docs no longer write it so"
    module, _, name = target.rpartition(".")
    real = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    params = [p.strip() for p in documented[documented.index("(") + 1:-1].replace("\n", " ").split(",")]
    params = [p for p in params if p != "*"]
    assert [p.split("=")[0] for p in params] == list(real)[:len(params)]
    for p in params:
        if "=" in p:
            key, default = p.split("=")
            assert real[key].default == eval(default), (key, real[key].default)
