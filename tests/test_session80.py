"""Session 80 (the coordinator's own mends of helpers' changes): the text cache's count bound kept beside its
byte bound."""


def test_a_text_cache_count_set_by_the_user_still_bounds_the_memory_cache(monkeypatch):
    from transferkit.text import HashingEncoder
    enc = HashingEncoder(16)
    monkeypatch.setattr(enc, "cache_entries", 2)
    enc.encode(["a", "b", "c"])
    assert list(enc._cache) == ["b", "c"] and enc._bytes == 2 * 16 * 4
