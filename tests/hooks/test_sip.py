import copy

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from sipgrad import SIP, Classifier, Preprocessing, SIPConfig, SipgradError, explain
from sipgrad.calibration.stats import LayerStatistics, SIPStatistics, layer_fingerprint
from sipgrad.hooks import filter_gradient
from sipgrad.models import ClassNames, load_model
from tests.conftest import make_small_cnn

LAYERS = ("conv1", "conv2", "conv3")


@pytest.fixture
def classifier(small_cnn):
    return Classifier.wrap(small_cnn, Preprocessing(input_size=32), ClassNames.generic(10), name="small",
                           sip_layers=LAYERS)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_filter_is_applied_at_the_conv_output(small_batch):
    """Input gradient under SIP == backprop of the filtered conv3-output gradient, computed by hand.

    The hand computation needs an out-of-place ReLU: autograd.grad w.r.t. a tensor that was
    later modified in place returns the gradient of its new (post-ReLU) value.
    """
    small_cnn = make_small_cnn(inplace=False)
    targets = torch.tensor([1, 2, 3, 4])
    x = small_batch.clone().requires_grad_()
    outputs = {}
    handle = small_cnn.conv3.register_forward_hook(lambda m, i, o: outputs.update(conv3=o) or None)
    logit = small_cnn(x).gather(1, targets[:, None]).sum()
    handle.remove()
    activation = outputs["conv3"]
    grad_at_conv3, = torch.autograd.grad(logit, activation, retain_graph=True)
    scores = (activation * grad_at_conv3).mean(dim=(2, 3))
    # the one share convention: max(1, floor(0.3 * 24)) = 7 channels
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(7, 1).indices, True)
    expected, = torch.autograd.grad(activation, x, grad_outputs=filter_gradient(grad_at_conv3, keep),
                                    retain_graph=True)

    with SIP(small_cnn, "topq:0.3", layers=("conv3",)) as sip:
        ours, = torch.autograd.grad(small_cnn(x).gather(1, targets[:, None]).sum(), x)
        assert torch.equal(sip.hook.last_keep["conv3"], keep)
    assert torch.allclose(ours, expected, atol=1e-6)
    plain, = torch.autograd.grad(logit, x)
    assert not torch.allclose(ours, plain)


def test_results_do_not_depend_on_the_rest_of_the_batch(classifier, small_batch):
    for spec in ("topq:0.25", "act:0.5", "absq:0.3"):
        whole = explain(classifier, small_batch, sip=spec, target=[1, 2, 3, 4]).attribution
        alone = torch.cat([explain(classifier, small_batch[i:i + 1], sip=spec, target=[t]).attribution
                           for i, t in enumerate([1, 2, 3, 4])])
        assert torch.allclose(whole, alone, atol=1e-6), spec


def test_sip_changes_gradients_and_hooks_leave_no_trace(classifier, small_cnn, small_batch):
    before = copy.deepcopy(small_cnn.state_dict())
    hooks = _hook_count(small_cnn)
    plain = explain(classifier, small_batch).attribution
    filtered = explain(classifier, small_batch, sip="topq:0.1").attribution
    assert not torch.allclose(plain, filtered)
    assert _hook_count(small_cnn) == hooks
    assert all(torch.equal(before[k], v) for k, v in small_cnn.state_dict().items())
    again = explain(classifier, small_batch).attribution
    assert torch.equal(plain, again)


def test_hooks_are_removed_after_an_exception(small_cnn, small_batch):
    hooks = _hook_count(small_cnn)
    with pytest.raises(ZeroDivisionError):
        with SIP(small_cnn, "topq:0.5", layers=LAYERS):
            assert _hook_count(small_cnn) > hooks
            1 / 0
    assert _hook_count(small_cnn) == hooks
    # A graph built inside the block but backpropagated after it is not filtered.
    x = small_batch.clone().requires_grad_()
    with SIP(small_cnn, "topq:0.1", layers=LAYERS):
        out = small_cnn(x)[:, 0].sum()
    late, = torch.autograd.grad(out, x)
    plain, = torch.autograd.grad(small_cnn(x)[:, 0].sum(), x)
    assert torch.allclose(late, plain)


def test_inplace_relu_gives_the_same_result_as_out_of_place(small_batch):
    inplace, copy_ = make_small_cnn(inplace=True), make_small_cnn(inplace=False)
    results = []
    for model in (inplace, copy_):
        wrapped = Classifier.wrap(model, Preprocessing(input_size=32), ClassNames.generic(10), sip_layers=LAYERS)
        results.append([explain(wrapped, small_batch, method=m, sip=s, ig_steps=4).attribution
                        for m in ("grad", "ig") for s in ("topq:0.25", "act:0.25")])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-6)


class _InPlaceAfterConv(nn.Module):
    """conv -> an in-place op on the conv output (the hooked layer) -> conv -> logits."""

    def __init__(self, after: str, inplace: bool) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)
        self.after, self.inplace = after, inplace
        self.act = {"leaky": nn.LeakyReLU(0.1, inplace=inplace), "silu": nn.SiLU(inplace=inplace),
                    "relu": nn.ReLU(inplace=inplace), "relu6": nn.ReLU6(inplace=inplace)}.get(after)

    def forward(self, x):
        h = self.conv1(x)
        if self.after == "residual":
            skip = x.mean(dim=1, keepdim=True).expand_as(h)
            h = h.add_(skip) if self.inplace else h + skip
        else:
            h = self.act(h)
        return self.head(self.conv2(h).mean(dim=(2, 3)))


@pytest.mark.parametrize("after", ["leaky", "silu", "relu6", "residual"])
@pytest.mark.parametrize("spec", ["topq:0.25", "absq:0.25", "act:0.25"])
def test_an_in_place_op_after_the_hooked_conv_does_not_change_what_sip_reads(small_batch, after, spec):
    """The hooks read the conv's own output, not what an in-place op made of it afterwards."""
    maps = []
    for inplace in (True, False):
        model = _InPlaceAfterConv(after, inplace).eval()
        wrapped = Classifier.wrap(model, Preprocessing(input_size=32), ClassNames.generic(10), sip_layers=("conv1",))
        maps.append(explain(wrapped, small_batch, method="grad", sip=spec, target=[1, 2, 3, 4]).attribution)
    assert torch.allclose(maps[0], maps[1], atol=1e-6), (after, spec)


def test_an_in_place_relu_costs_no_second_conv_pass(small_batch):
    """ReLU is harmless to every score, so the hooked conv runs once per pass; LeakyReLU makes it run twice."""
    for after, passes in (("relu", 1), ("leaky", 2)):
        model = _InPlaceAfterConv(after, inplace=True).eval()
        calls = []
        model.conv1.forward = lambda x, conv=model.conv1: calls.append(1) or nn.Conv2d.forward(conv, x)
        with SIP(model, "topq:0.25", layers=("conv1",)):
            model(small_batch)[:, 1].sum().backward()
        assert len(calls) == passes, after


def test_an_output_and_input_both_changed_in_place_is_refused(small_batch):
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            x = x.clone()
            h = self.conv(x)
            h.mul_(2.0)
            x.add_(1.0)  # the conv's input: its output cannot be recomputed any more
            return (h + x).mean(dim=(2, 3))

    model = Both().eval()
    with pytest.raises(SipgradError, match="layer 'conv': both its output and its input were changed in place"):
        with SIP(model, "topq:0.5", layers=("conv",)):
            model(small_batch)[:, 1].sum().backward()


def test_pca_and_recorders_never_recompute(small_batch):
    """pca reads only the gradient: an in-place op on the output costs it nothing."""
    model = _InPlaceAfterConv("leaky", inplace=True).eval()
    calls = []
    model.conv1.forward = lambda x, conv=model.conv1: calls.append(1) or nn.Conv2d.forward(conv, x)
    with SIP(model, "pca:2", layers=("conv1",)):
        model(small_batch)[:, 1].sum().backward()
    assert len(calls) == 1


def test_inplace_relu_in_torchvision_resnet_and_vgg():
    """Real torchvision models use ReLU(inplace=True) right after BN (ResNet) or the conv itself (VGG)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    for name in ("resnet18", "vgg16"):
        model = load_model(name, pretrained=False)
        twin = copy.deepcopy(model)
        for module in twin.module.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False
        a = explain(model, x, sip="topq:0.2", target=[5, 6]).attribution
        b = explain(twin, x, sip="topq:0.2", target=[5, 6]).attribution
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), name
        assert all(m.inplace for m in model.module.modules() if isinstance(m, nn.ReLU))  # untouched


def test_finite_gamma_and_no_variance_conservation(classifier, small_batch):
    plain = explain(classifier, small_batch).attribution
    infinite = explain(classifier, small_batch, sip="topq:0.25").attribution
    huge = explain(classifier, small_batch, sip=SIPConfig(fraction=0.25, gamma=1e6)).attribution
    one = explain(classifier, small_batch, sip=SIPConfig(fraction=0.25, gamma=1.0)).attribution
    # gamma -> inf approaches the pruning filter; gamma finite keeps some pruned signal.
    assert torch.allclose(huge, infinite, rtol=1e-3, atol=1e-6)
    assert not torch.allclose(one, infinite)
    raw = explain(classifier, small_batch, sip=SIPConfig(fraction=0.25, variance_conservation=False)).attribution
    assert not torch.allclose(raw, infinite) and not torch.allclose(raw, plain)


@pytest.mark.parametrize("method", ["grad", "inputgrad", "smoothgrad", "ig", "gradcam"])
def test_sip_works_under_every_method(classifier, small_batch, method):
    options = {"ig_steps": 4, "smoothgrad_samples": 3}
    plain = explain(classifier, small_batch, method=method, **options).attribution
    filtered = explain(classifier, small_batch, method=method, sip="topq:0.1", **options).attribution
    assert torch.isfinite(filtered).all() and filtered.shape == plain.shape
    assert not torch.allclose(plain, filtered)  # for Grad-CAM: its layer, conv3, is itself hooked
    if method == "gradcam":  # hooks only below the CAM layer leave the CAM unchanged
        upstream = explain(classifier, small_batch, method=method,
                           sip=SIPConfig(fraction=0.1, layers=("conv1", "conv2")), **options).attribution
        assert torch.allclose(plain, upstream)


def test_any_captum_method_inside_the_context(classifier, small_cnn, small_batch):
    targets = torch.tensor([1, 2, 3, 4])
    with SIP(classifier, "topq:0.25"):
        captum_saliency = Saliency(small_cnn).attribute(small_batch, target=targets, abs=True)
        captum_ig = IntegratedGradients(small_cnn).attribute(small_batch, target=targets, n_steps=4)
    ours = explain(classifier, small_batch, sip="topq:0.25", target=targets)
    assert torch.allclose(captum_saliency, ours.attribution, atol=1e-6)
    ig = explain(classifier, small_batch, method="ig", ig_baseline="zero", ig_steps=4, sip="topq:0.25",
                 target=targets, internal_batch_size=1000)
    assert torch.allclose(captum_ig, ig.attribution, atol=1e-5)


def _fake_statistics(model: nn.Module, layers=LAYERS, classes=10, seed=0) -> SIPStatistics:
    rng = np.random.default_rng(seed)
    modules = dict(model.named_modules())
    per_layer = {}
    for name in layers:
        c = modules[name].out_channels
        per_layer[name] = LayerStatistics(mean=rng.random(c), std=rng.random(c) + 0.1,
                                          shapiro=rng.random(c) * 0.1, class_pvalues=rng.random((c, classes)),
                                          count=100)
    return SIPStatistics("small", tuple(layers), layer_fingerprint(model, layers), per_layer, classes)


def test_a_class_without_p_values_is_named_with_every_reason_it_can_have(classifier, small_cnn, small_batch):
    """Welch's test has no p-value when the class or the rest has fewer than 2 images (or no variance): the
    warning must not claim the class itself was short of images when it was the others."""
    stats = _fake_statistics(small_cnn)
    for table in stats.per_layer.values():
        table.class_pvalues[:, 3] = np.nan
    with pytest.warns(UserWarning, match=r"no p-values for class 3 \(its calibration had fewer than 2 images of it "
                                         r"or of the other classes, or no variance in them\)"):
        explain(classifier, small_batch, sip=SIPConfig("cls", stats=stats), target=3)


def test_cls_policy_keeps_the_target_classes_significant_channels(classifier, small_cnn, small_batch):
    stats = _fake_statistics(small_cnn)
    targets = torch.tensor([1, 2, 3, 4])
    with SIP(classifier, "cls", stats=stats, alpha=0.3) as sip:
        Saliency(small_cnn).attribute(small_batch, target=targets)
        keep = sip.hook.last_keep["conv3"]
    table = stats.per_layer["conv3"]
    expected = (table.class_pvalues[:, targets.numpy()].T <= 0.3) & (table.shapiro < 0.05)[None]
    expected |= ~expected.any(1, keepdims=True)
    assert np.array_equal(keep.numpy(), expected)
    with SIP(classifier, "cls", stats=stats, quantile=0.25) as sip:
        Saliency(small_cnn).attribute(small_batch, target=targets)
        counts = sip.hook.last_keep["conv3"].sum(1)
    assert (counts <= max(1, int(0.25 * 24))).all()


def test_ins_policy_uses_z_scores_of_the_activation(classifier, small_cnn, small_batch):
    stats = _fake_statistics(small_cnn)
    captured = {}

    def capture(module, inputs, output):
        captured.setdefault("a", output.detach().clone())

    handle = small_cnn.conv2.register_forward_hook(capture)
    with SIP(classifier, "ins", stats=stats, alpha=0.4, shapiro_gate=False) as sip:
        explain(classifier, small_batch, sip=None)  # plain pass inside: ins needs no targets
        keep = sip.hook.last_keep["conv2"]
    handle.remove()
    from scipy.stats import norm

    table = stats.per_layer["conv2"]
    gap = np.maximum(captured["a"].numpy(), 0).mean(axis=(2, 3))
    expected = norm.sf((gap - table.mean) / table.std) < 0.4
    expected |= ~expected.any(1, keepdims=True)
    assert np.array_equal(keep.numpy(), expected)


def test_statistics_file_for_another_model_is_refused(classifier, small_cnn, tmp_path):
    stats = _fake_statistics(small_cnn)
    path = tmp_path / "stats.npz"
    stats.save(path)
    loaded = SIPStatistics.load(path)
    assert loaded.layers == LAYERS and np.allclose(loaded.per_layer["conv1"].mean, stats.per_layer["conv1"].mean)
    with SIP(classifier, "cls", stats=path):
        pass
    other = Classifier.wrap(make_small_cnn(seed=1), Preprocessing(input_size=32), ClassNames.generic(10),
                            sip_layers=LAYERS)
    with pytest.raises(SipgradError, match="not for this"):
        SIP(other, "cls", stats=path)
    with pytest.raises(SipgradError, match="needs calibration statistics"):
        SIP(classifier, "cls")


def test_spec_strings_and_layer_selection(classifier, small_cnn):
    assert SIPConfig.parse("none") is None
    assert SIPConfig.parse("topq:0.1").fraction == 0.1
    assert SIPConfig.parse("cls:0.2", stats="x.npz").quantile == 0.2
    assert SIPConfig.parse("TOPQ").label == "topq:0.25"
    for bad in ("gradcam", "topq:abc", "topq:1.5"):
        with pytest.raises(SipgradError):
            SIPConfig.parse(bad)
    assert SIP(classifier, "topq").layers == LAYERS
    assert SIP(small_cnn, "topq", layer_ratio=0.5).layers == ("conv2", "conv3")
    assert SIP(small_cnn, "topq", layers="stem,conv3").layers == ("stem", "conv3")
    with pytest.raises(SipgradError, match="no layer named"):
        SIP(small_cnn, "topq", layers=("conv9",))
