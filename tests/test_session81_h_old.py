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


# ---- userdata: a 16-bit grey+alpha PNG reads as grey, transparency on white (as an 8-bit LA PNG) ---------------
def _png_la16(path, grey, alpha):
    """A 16-bit grey+alpha PNG (colour type 4, depth 16), written by hand: Pillow saves none."""
    import struct
    import zlib

    import numpy as np
    a = np.stack([grey, alpha], axis=-1).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in a)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", a.shape[1], a.shape[0], 16, 4, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_a_16_bit_grey_alpha_png_reads_as_grey_on_white(tmp_path):
    import numpy as np
    from PIL import Image

    from transferkit.userdata import load_image_folder, read_images
    grey = np.tile(np.arange(4) * 20000, (3, 1))  # 0, 20000, 40000, 60000 (16-bit)
    alpha = np.full((3, 4), 65535)
    alpha[0, 0] = 0  # a transparent black pixel: white
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        _png_la16(tmp_path / c / "x.png", grey, alpha)
    assert Image.open(tmp_path / "a" / "x.png").mode == "RGBA"  # what Pillow makes of it
    x = read_images([tmp_path / "a" / "x.png"])
    assert x.shape == (1, 1, 3, 4)  # one grey channel, as an 8-bit LA PNG
    want = np.round(grey / 65535 * 255) / 255
    want[0, 0] = 1.0
    np.testing.assert_allclose(x[0, 0].numpy(), want, atol=1 / 255)
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (2, 1, 3, 4)
