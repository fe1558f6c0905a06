"""Image-format audit of user folders (session 80): how the loader reads the files a camera,
scanner or web scrape gives (1-bit and 16-bit grey transparency, JPEG and PNM suffixes, empty files)."""

import numpy as np
import pytest
from PIL import Image

from transferkit.errors import TransferkitError
from transferkit.userdata import load_image_folder, read_images


def test_transparent_pixels_of_1_bit_and_16_bit_grey_pngs_are_white(tmp_path):
    Image.new("1", (4, 4), 0).save(tmp_path / "mask.png", transparency=0)  # a tRNS key, as in a grey PNG
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "deep.png", transparency=40000)
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "opaque.png")
    x = read_images([tmp_path / "mask.png", tmp_path / "deep.png", tmp_path / "opaque.png"])
    assert x.shape == (3, 1, 4, 4)
    assert x[0].eq(1).all() and x[1].eq(1).all()
    assert x[2].eq(round(40000 / 65535 * 255) / 255).all()  # no transparency: 16-bit scaled, not white



def test_browser_jpeg_and_scanner_netpbm_suffixes_are_read_in_any_case(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    for name in ("a.jfif", "b.JPE"):  # a browser's "save image as" of a JPEG
        Image.new("L", (4, 4), 200).save(tmp_path / "cat" / name, format="JPEG")
    for name, mode, value in (("c.pgm", "L", 50), ("d.PPM", "RGB", (50, 50, 50)), ("e.pnm", "L", 50),
                              ("f.pbm", "1", 0)):
        Image.new(mode, (4, 4), value).save(tmp_path / "dog" / name, format="PPM")
    d = load_image_folder(tmp_path)
    assert d.class_names == ["cat", "dog"] and d.labels.tolist() == [0, 0, 1, 1, 1, 1]
    assert d.provenance["files"] == 6 and d.images.shape == (6, 3, 4, 4)
    assert d.images[:2].mul(255).round().eq(200).all() and d.images[5].eq(0).all()


def test_an_empty_a_cut_short_and_a_web_page_file_are_named_as_such(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:200])
    (tmp_path / "page.jpg").write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    with pytest.raises(TransferkitError) as e:
        read_images([tmp_path / "whole.jpg", tmp_path / "empty.png", tmp_path / "cut.jpg", tmp_path / "page.jpg"])
    lines = str(e.value).splitlines()
    assert lines[0].startswith("3 of the 4 image files")
    assert "empty.png'" in lines[1] and "it is empty (0 bytes" in lines[1]
    assert "cut.jpg'" in lines[2] and "cut short" in lines[2]
    assert "page.jpg'" in lines[3] and "holds text, not an image" in lines[3]
