"""Work done twice that stop 72's profile-driven speed audit found; each test fails on the code
before its fix and checks that the faster path gives the same numbers."""
import torch
from helpers import toy_domain

from transferkit import TrainConfig, Transfer


def test_a_second_transfer_on_the_same_source_reuses_the_pre_training(monkeypatch):
    # before: each Transfer pre-trained again (the memo was the object's): 28 s of the README's 600 steps per fit
    import transferkit.api as api
    from transferkit.methods.supervised import SourceOnly
    monkeypatch.setattr(api, "PRETRAINED", api.OrderedDict())
    fits = []
    real_fit = api.Engine.fit

    def counted(engine, method, **kw):
        fits.append(type(method) is SourceOnly)
        return real_fit(engine, method, **kw)

    monkeypatch.setattr(api.Engine, "fit", counted)
    source, target, test = toy_domain(48, name="s"), toy_domain(16, seed=1, name="t"), toy_domain(24, seed=2)
    pre, tiny = TrainConfig(steps=6, batch_size=8, progress=False), TrainConfig(steps=3, batch_size=8, progress=False)

    def fitted(method, **kw):
        return Transfer(method, backbone="lenet", pretrain=pre, train=tiny, **kw).fit(source=source, target=target)

    fitted("finetune")
    again = fitted("linear_probe")
    assert fits.count(True) == 1  # one pre-training for both
    other_seed = fitted("linear_probe", seed=1)
    assert fits.count(True) == 2 and len(api.PRETRAINED) == api.PRETRAINED_KEPT
    api.PRETRAINED.clear()
    fresh = fitted("linear_probe")
    assert fits.count(True) == 3
    assert torch.equal(again.predict_logits(test), fresh.predict_logits(test))
    assert not torch.equal(other_seed.predict_logits(test), fresh.predict_logits(test))


def test_the_source_prototypes_of_one_source_network_are_computed_once_across_jobs():
    # before: every job ran the fixed source network over every source image again (6 % of bench fewshot --quick)
    from transferkit.backbones import build_backbone
    from transferkit.frozen import MEMO
    from transferkit.methods import get_method
    source, target = toy_domain(40, classes=4, name="s"), toy_domain(12, seed=1, classes=4, name="t")
    def lenet():
        torch.manual_seed(0)
        return build_backbone("lenet", num_classes=4)

    MEMO.clear()
    prototypes = []
    for _ in range(2):
        method = get_method("lext")(lenet())
        method.prepare({"source": source, "target": target, "unlabeled": target})
        method._set_prototypes()
        prototypes.append(method.source_prototypes)
    assert (MEMO.misses, MEMO.hits) == (1, 1)
    net = lenet().eval()
    with torch.no_grad():
        by_hand = torch.stack([net.forward_features(source.images)[source.labels == c].mean(0) for c in range(4)])
    assert torch.equal(prototypes[0], prototypes[1])
    assert torch.allclose(prototypes[0], by_hand, atol=1e-6)


def test_a_resumed_uda_benchmark_keeps_a_t_sne_figure_of_the_same_embeddings(tmp_path, monkeypatch):
    # before: every resume ran the t-SNE again (7.5 s of an 18 s resume of a finished quick directory)
    from test_bench_uda_second_mutation import _fake_tsne

    import transferkit.bench.uda as uda
    import transferkit.plots as plots
    net, drawn, _ = _fake_tsne(monkeypatch, tmp_path)
    monkeypatch.setattr(plots, "tsne_embeddings", lambda panels, path, **kw: drawn.append(path)
                        or path.write_bytes(b"png") and path)
    b = uda.UdaPlan(seeds=(5,), pairs="mnist:digits", methods="dann", tsne_points=10)
    lines = []
    first = uda.tsne_figure(tmp_path, "mnist", "digits", b, lines.append)
    assert uda.tsne_figure(tmp_path, "mnist", "digits", b, lines.append) == first and len(drawn) == 1
    assert "unchanged: the same embeddings" in lines[-1]
    with torch.no_grad():
        net.units["conv1"][0].weight.add_(0.1)  # other embeddings (another adapted network): drawn again
    uda.tsne_figure(tmp_path, "mnist", "digits", b, lines.append)
    first.write_bytes(b"")  # a figure removed or replaced: drawn again
    first.unlink()
    uda.tsne_figure(tmp_path, "mnist", "digits", b, lines.append)
    assert len(drawn) == 3


def test_a_resumed_fewshot_benchmark_keeps_a_t_sne_figure_of_the_same_embeddings(tmp_path, monkeypatch):
    # before: fewshot kept the embeddings (tsne/embeddings-<key>.pt) but ran the t-SNE itself again on every resume,
    # the twin of uda's (both now go through bench.kept_tsne)
    from test_bench_fewshot_zeroshot_fourth_mutation import _fake_tsne

    from transferkit import plots
    from transferkit.bench.fewshot import fewshot_config, tsne_figure
    _fake_tsne(monkeypatch)
    drawn = []
    monkeypatch.setattr(plots, "tsne_embeddings", lambda panels, path, **kw: drawn.append(path)
                        or path.parent.mkdir(parents=True, exist_ok=True) or path.write_bytes(b"png") and path)
    cfg = fewshot_config("tsne", "syndigits", "mnist", 2, True, 1, ["lext"])
    first = tsne_figure(cfg, tmp_path, lambda *a: None, n=8)
    assert tsne_figure(cfg, tmp_path, lambda *a: None, n=8) == first and drawn == [tmp_path / "img" / "tsne.png"]
