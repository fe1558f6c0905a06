import pytest
import torch

from transferkit.errors import TransferkitError, UnknownNameError
from transferkit.heads import (
    CosineHead,
    LinearHead,
    PrototypeHead,
    class_means,
    head_for_classes,
    list_heads,
    make_head,
    prototype_logits,
)


def test_linear_head_names_and_shape():
    h = LinearHead(8, 3)
    assert set(dict(h.named_parameters())) == {"weight", "bias"}
    assert h(torch.randn(5, 8)).shape == (5, 3)
    assert (h.in_features, h.num_classes) == (8, 3)


def test_cosine_logits_bounded_by_scale():
    torch.manual_seed(0)
    h = CosineHead(16, 4, scale=5.0)
    x = torch.randn(32, 16) * 1000
    out = h(x)
    assert out.shape == (32, 4)
    assert out.abs().max() <= 5.0 + 1e-4
    assert torch.allclose(h(x), h(x * 0.01), atol=1e-5)  # invariant to feature norm
    assert isinstance(h.scale, torch.nn.Parameter)
    fixed = CosineHead(16, 4, scale=2.0, learn_scale=False)
    assert "scale" in dict(fixed.named_buffers()) and "scale" not in dict(fixed.named_parameters())
    # a feature aligned with a class weight reaches the bound
    assert torch.allclose(fixed(fixed.weight[1:2] * 3)[0, 1], torch.tensor(2.0))


def test_prototype_fit_equals_class_means():
    feats = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [1.0, 1.0], [3.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 2, 2])
    h = PrototypeHead(2, 3).fit(feats, labels)
    assert torch.equal(h.prototypes, torch.tensor([[1.0, 0.0], [0.0, 4.0], [2.0, 2.0]]))
    assert h.counts.tolist() == [2, 1, 2]
    logits = h(torch.tensor([[1.0, 1.0]]))
    assert torch.allclose(logits, torch.tensor([[-1.0, -10.0, -2.0]]))
    assert "prototypes" in h.state_dict()


def test_prototype_cosine_metric_and_errors():
    h = PrototypeHead(2, 2, metric="cosine", scale=3.0)
    with pytest.raises(TransferkitError, match="fit"):
        h(torch.randn(1, 2))
    h.fit(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]))
    assert torch.allclose(h(torch.tensor([[5.0, 0.0]])), torch.tensor([[3.0, 0.0]]))
    with pytest.raises(TransferkitError, match=r"class\(es\) \[1\]"):
        PrototypeHead(2, 3).fit(torch.randn(4, 2), torch.tensor([0, 0, 2, 2]))
    with pytest.raises(UnknownNameError):
        PrototypeHead(2, 2, metric="manhattan")


def test_class_means_is_differentiable():
    f = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    m = class_means(f, labels, 3)
    assert torch.allclose(m, torch.stack([f[:3].mean(0), f[3], f[4:].mean(0)]))
    m.sum().backward()  # d(sum of means)/d f_i = 1 / |class of i|, through the means alone
    assert torch.allclose(f.grad, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0, 0.5, 0.5])[:, None].expand(6, 3))
    f.grad = None
    prototype_logits(f, class_means(f, labels, 3)).sum().backward()
    assert f.grad is not None


def test_make_head():
    assert list_heads() == ["cosine", "linear", "prototype"]
    assert isinstance(make_head("linear", 4, 2), LinearHead)
    assert isinstance(make_head("cosine", 4, 2, scale=2.0), CosineHead)
    assert make_head("prototype", 4, 2, metric="cosine").metric == "cosine"
    with pytest.raises(UnknownNameError, match="unknown head 'svm'"):
        make_head("svm", 4, 2)


@pytest.mark.parametrize("kind", ["linear", "cosine", "prototype"])
def test_head_for_classes_gives_the_chosen_outputs_in_order(kind):
    torch.manual_seed(0)
    head = make_head(kind, 6, 5)
    if kind == "prototype":
        head.fit(torch.randn(20, 6), torch.arange(20) % 5)
    x = torch.randn(7, 6)
    small = head_for_classes(head, [3, 0, 4])
    assert small.out_features == small.num_classes == 3
    assert torch.allclose(small(x), head(x)[:, [3, 0, 4]], atol=1e-6)  # same rows; GEMM shapes round apart
    assert all(p.requires_grad for p in small.parameters())
    with pytest.raises(TransferkitError, match="head rows must lie in"):
        head_for_classes(head, [5])


def test_head_for_classes_wraps_a_head_of_several_layers():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 5))
    small = head_for_classes(mlp, [4, 1], num_outputs=5)
    x = torch.randn(3, 6)
    assert small.num_classes == 2 and torch.equal(small(x), mlp(x)[:, [4, 1]])


@pytest.mark.parametrize("kind,kw", [("cosine", {}), ("prototype", {"metric": "cosine"})])
@pytest.mark.parametrize("scale", [0.0, -10.0, float("nan"), True])
def test_cosine_heads_refuse_a_scale_that_is_not_a_positive_number(kind, kw, scale):
    with pytest.raises(TransferkitError, match="finite scale > 0"):
        make_head(kind, 4, 3, scale=scale, **kw)  # -10 inverted the predictions, 0 flattened them
