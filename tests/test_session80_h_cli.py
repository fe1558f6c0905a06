"""The CLI's subcommands agree with each other (session 80's audit): a flag means the same on every
command that takes it (``--portable-kernels`` where numbers are compared)."""

from transferkit import cli


def test_episodes_takes_portable_kernels_and_caps_the_kernels_before_its_work(monkeypatch, tmp_path, capsys):
    import transferkit.runtime as runtime
    capped = []
    monkeypatch.setattr(runtime, "portable_kernels", lambda: capped.append(True) or {})
    assert cli.build_parser().parse_args(["episodes", str(tmp_path), "--portable-kernels"]).portable_kernels
    assert cli.main(["episodes", str(tmp_path), "--portable-kernels"]) == 2  # no run there: refused after the cap
    assert capped == [True]
    assert "not a run directory" in capsys.readouterr().err
