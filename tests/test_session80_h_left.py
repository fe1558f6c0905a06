"""Session 80 leftovers (helper h_left): ``bench.kept_tsne`` keys a kept figure by the drawing style
(``plots.TSNE_STYLE``); a diverged pre-training marks bench flex's and bench represent's rows ``diverged``
(stored in their source records, read back on resume); the diverged line under those suites' own tables;
no host sync per ``matching_ft`` step; one rule for whole-valued float labels in prototypes and matching."""
import torch


# ---- 1. bench.kept_tsne: a figure of older drawing code is redrawn ---------------------------------------------------
def test_kept_tsne_redraws_a_figure_of_another_drawing_style(monkeypatch, tmp_path):
    # before: the key held the panels, options and scikit-learn's version only, so a resume kept a PNG drawn by
    # older drawing code (target points as dots, long legend names cut off)
    from transferkit import bench, plots
    drawn = []
    monkeypatch.setattr(plots, "tsne_embeddings", lambda panels, path, **kw: drawn.append(path)
                        or path.write_bytes(b"png") and path)
    panels, path = {"a": torch.ones(5, 3)}, tmp_path / "tsne.png"
    assert bench.kept_tsne(panels, path, lambda *a: None, title="t") == path
    bench.kept_tsne(panels, path, lambda *a: None, title="t")
    assert len(drawn) == 1  # the same style: kept
    monkeypatch.setattr(plots, "TSNE_STYLE", getattr(plots, "TSNE_STYLE", 0) + 1, raising=False)
    bench.kept_tsne(panels, path, lambda *a: None, title="t")
    assert len(drawn) == 2  # a newer drawing: redrawn
