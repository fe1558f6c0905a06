"""Session 80 (the coordinator's own mends): the text cache's count bound kept beside its byte bound; `show`
refuses a grid name that is not *.png before reading the domain."""


def test_a_text_cache_count_set_by_the_user_still_bounds_the_memory_cache(monkeypatch):
    from transferkit.text import HashingEncoder
    enc = HashingEncoder(16)
    monkeypatch.setattr(enc, "cache_entries", 2)
    enc.encode(["a", "b", "c"])
    assert list(enc._cache) == ["b", "c"] and enc._bytes == 2 * 16 * 4


def test_show_refuses_a_grid_name_that_is_not_png_before_reading_the_domain(monkeypatch, capsys):
    # before: the domain was read (a minute for a first digits or syndigits build) and only then the name refused;
    # under two test processes the other one's build added a "waiting" line to the one-line refusal
    import transferkit.data as data
    from transferkit.cli import main

    def no_read(*a, **k):
        raise AssertionError("the domain was read")

    monkeypatch.setattr(data, "load_domain", no_read)
    assert main(["show", "digits", "--out", "grid.jpg"]) == 2
    assert "the sample grid is a PNG image: name it *.png" in capsys.readouterr().err
