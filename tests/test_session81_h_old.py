"""Behaviour items left open by earlier notes (session 81, helper h_old): each test fails on the code
before its fix."""
import os

import pytest

from transferkit.errors import TransferkitError


# ---- io.check_stream: a named pipe behind /dev/fd/N is refused, an anonymous pipe is not; one stat -------------
@pytest.fixture
def named_pipe_fds(tmp_path):
    os.mkfifo(tmp_path / "p")
    r = os.open(tmp_path / "p", os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(tmp_path / "p", os.O_WRONLY)
    yield r, w
    os.close(r)
    os.close(w)


@pytest.mark.skipif(not os.path.isdir("/dev/fd") or not hasattr(os, "mkfifo"), reason="POSIX /dev/fd and named pipes")
def test_a_named_pipe_behind_dev_fd_is_refused(named_pipe_fds):
    from transferkit.io import append_jsonl, check_stream
    r, w = named_pipe_fds
    for path in (f"/dev/fd/{w}", f"/proc/self/fd/{w}"):
        if os.path.exists(path):
            with pytest.raises(TransferkitError, match=r"is a named pipe \(the one that descriptor opened\)"):
                check_stream(path)
    with pytest.raises(TransferkitError, match="is a named pipe"):
        append_jsonl(f"/dev/fd/{w}", {"step": 1})
    with pytest.raises(BlockingIOError):  # nothing was written to it
        os.read(r, 100)


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="POSIX /dev/fd")
def test_an_anonymous_pipe_behind_dev_fd_is_still_written():
    from transferkit.io import append_jsonl, check_stream
    r, w = os.pipe()
    try:
        assert check_stream(f"/dev/fd/{w}") is True
        append_jsonl(f"/dev/fd/{w}", {"step": 1})
        assert os.read(r, 100) == b'{"step": 1}\n'
    finally:
        os.close(r)
        os.close(w)


def test_append_jsonl_stats_the_metrics_path_once(tmp_path, monkeypatch):
    from transferkit import io
    calls, real = [], os.stat
    monkeypatch.setattr(io.os, "stat", lambda p, *a, **k: (calls.append(str(p)), real(p, *a, **k))[1])
    for path in (tmp_path / "m.jsonl", "/dev/null"):
        calls.clear()
        io.append_jsonl(path, {"step": 1})
        assert calls.count(str(path)) == 1, calls
    assert (tmp_path / "m.jsonl").read_text() == '{"step": 1}\n'
