"""Image-format audit of user folders (session 80): how the loader reads the files a camera,
scanner or web scrape gives (1-bit and 16-bit grey transparency, JPEG and PNM suffixes, empty files)."""

import numpy as np
from PIL import Image

from transferkit.userdata import read_images


def test_transparent_pixels_of_1_bit_and_16_bit_grey_pngs_are_white(tmp_path):
    Image.new("1", (4, 4), 0).save(tmp_path / "mask.png", transparency=0)  # a tRNS key, as in a grey PNG
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "deep.png", transparency=40000)
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "opaque.png")
    x = read_images([tmp_path / "mask.png", tmp_path / "deep.png", tmp_path / "opaque.png"])
    assert x.shape == (3, 1, 4, 4)
    assert x[0].eq(1).all() and x[1].eq(1).all()
    assert x[2].eq(round(40000 / 65535 * 255) / 255).all()  # no transparency: 16-bit scaled, not white
