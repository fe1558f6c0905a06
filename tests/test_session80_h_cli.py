"""The CLI's subcommands agree with each other (session 80's audit): a flag means the same on every
command that takes it (``--portable-kernels`` where numbers are compared), and the listings
(``domains``, ``methods``, ``bench list``) and ``summary`` have one machine-readable form (``--format json``), ``run``
takes ``--out`` as ``bench`` does, and every command the docs show is accepted by the real parser."""

import json

import pytest

from transferkit import cli


def test_episodes_takes_portable_kernels_and_caps_the_kernels_before_its_work(monkeypatch, tmp_path, capsys):
    import transferkit.runtime as runtime
    capped = []
    monkeypatch.setattr(runtime, "portable_kernels", lambda: capped.append(True) or {})
    assert cli.build_parser().parse_args(["episodes", str(tmp_path), "--portable-kernels"]).portable_kernels
    assert cli.main(["episodes", str(tmp_path), "--portable-kernels"]) == 2  # no run there: refused after the cap
    assert capped == [True]
    assert "not a run directory" in capsys.readouterr().err


def _json_of(capsys, *argv):
    assert cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_the_listings_print_json_with_format_json(capsys):
    from transferkit.bench import load_suites
    listed = _json_of(capsys, "domains", "--format", "json")
    assert "mnist" in {d["name"] for d in listed["domains"]} and "blur" in {s["name"] for s in listed["shifts"]}
    methods = {m["name"]: m for m in _json_of(capsys, "methods", "--format", "json")}
    assert methods["dann"]["streams"] == ["source", "unlabeled"] and "options" not in methods["dann"]
    dann = _json_of(capsys, "methods", "dann", "--format", "json")
    assert [m["name"] for m in dann] == ["dann"] and dann[0]["options"]["weight"] == {"default": 0.1}
    assert dann[0]["options"]["lambda_schedule"]["choices"] == ["dann", "constant"] and dann[0]["doc"]
    suites = _json_of(capsys, "bench", "list", "--format", "json")
    assert [s["name"] for s in suites] == sorted(load_suites()) and all(s["description"] for s in suites)


def test_bench_refuses_format_json_but_for_its_list(capsys):
    assert cli.main(["bench", "demo", "--quick", "--format", "json", "--print-plan"]) == 2
    assert "--format json is for `transferkit bench list`" in capsys.readouterr().err


def test_summary_prints_json_of_the_summary_entries_and_the_notes(tmp_path, capsys):
    from transferkit.results import write_results
    rows = [{"method": "finetune", "source": "s", "target": "t", "setting": "k=1", "seed": s, "accuracy": a,
             "wall_s": 1.0} for s, a in ((0, 0.5), (1, 0.7))]
    write_results(tmp_path / "a", "a", {"target_classes": "5-9"}, rows)
    out = _json_of(capsys, "summary", str(tmp_path / "a"), "--format", "json")
    [entry] = out["summary"]
    assert entry["method"] == "finetune" and entry["accuracy_mean"] == pytest.approx(0.6) and entry["seeds"] == [0, 1]
    assert "Classes: target classes 5-9." in out["notes"]
    assert any(n.startswith("Mean ± standard error over n seeds") for n in out["notes"])


def test_run_takes_out_as_bench_does_and_it_wins_over_a_set_of_out_dir(tmp_path):
    parse = cli.build_parser().parse_args
    assert cli._run_config(parse(["run", "--out", str(tmp_path / "2026")])).out_dir == str(tmp_path / "2026")
    assert cli._run_config(parse(["run", "--out", "2026"])).out_dir == "2026"  # a path, not YAML's number
    with pytest.warns(UserWarning, match="--out mine wins over --set out_dir=theirs"):
        assert cli._run_config(parse(["run", "--set", "out_dir=theirs", "--out", "mine"])).out_dir == "mine"


def test_every_documented_command_is_accepted_by_the_parser(capsys):
    """Each `transferkit ...` of README.md and docs/*.md, cut at a shell redirection, parses with the real
    parser (no work runs); prose that names a command (`transferkit summary`, `bench --resume`) or a
    placeholder (`--workers N`, `[--quick]`, `...`) is left out."""
    import re
    import shlex

    from test_docs_examples import _commands
    parsed, wrong = [], []
    for f, n, cmd in _commands():
        words = shlex.split(cmd)
        words = words[:next((i for i, w in enumerate(words) if re.match(r"\d?>", w)), len(words))]
        if re.search(r"\.\.\.|\[|\bN\b| / ", cmd) or all(w.startswith("-") for w in words[2:4]) and len(words) <= 3:
            continue
        try:
            cli.build_parser().parse_args(words[1:])
            parsed.append(" ".join(words))
        except SystemExit:
            wrong.append(f"{f}:{n} {cmd}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not wrong, "\n".join(wrong)
    assert len(parsed) >= 100 and "transferkit run demo --out /tmp/r" in parsed
    assert "transferkit bench list --format json" in parsed


def test_counts_and_paths_have_the_metavars_of_the_other_commands():
    usage = {name: cli.build_parser()._subparsers._group_actions[0].choices[name].format_usage()
             for name in ("show", "episodes", "report", "run")}
    assert "[--per-class N] [--size PX]" in usage["show"] and "[--out FILE]" in usage["show"]
    assert "[--n-way N]" in usage["episodes"] and "[--k-shot K [K ...]]" in usage["episodes"]
    assert "[--episodes N]" in usage["episodes"] and "[--heads NAMES]" in usage["episodes"]
    assert "[--out DIR]" in usage["report"] and "[--workers N]" in usage["run"]


def test_summary_refuses_a_folder_without_results_in_the_words_of_report(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for command in ("report", "summary"):
        assert cli.main([command, str(tmp_path / "empty")]) == 2
        assert f"no results.json in {tmp_path / 'empty'}: not a run or benchmark directory" in capsys.readouterr().err
