"""The attribution engine: batch invariance for every method x SIP policy, targets read from the
gradient (so any captum call works inside ``SIP`` with ``target=`` alone), one place for "predicted"."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
from PIL import Image

from sipgrad import SIP, Classifier, Preprocessing, explain
from sipgrad.attribution.engine import AttributionEngine, resolve_predicted
from sipgrad.attribution.methods import METHODS, MethodOptions
from sipgrad.calibration import calibrate
from sipgrad.errors import SipgradError
from sipgrad.hooks.core import targets_from_logit_gradient
from sipgrad.models import ClassNames
from tests.conftest import make_small_cnn

LAYERS = ("conv1", "conv2", "conv3")
OPTIONS = {"ig_steps": 6, "smoothgrad_samples": 3, "internal_batch_size": 5}
TARGETS = torch.tensor([3, 7, 3, 1, 7])


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def model():
    return make_small_cnn()


@pytest.fixture(scope="module")
def classifier(model):
    return Classifier.wrap(model, Preprocessing(input_size=32), ClassNames.generic(10), name="small",
                           sip_layers=LAYERS)


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def statistics(classifier, tmp_path_factory):
    """A real (small) calibration: 40 random images, 4 per class, through ``calibrate``."""
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(0)
    items = []
    for i in range(40):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        items.append((path, i % 10))
    return calibrate(classifier, items, folder / "stats.npz", layers=LAYERS, batch_size=16, crop=False)


POLICIES = ["none", "topq:0.25", "absq:0.25", "cls:0.3", "ins:0.3", "pca:3"]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("policy", POLICIES)
def test_maps_do_not_depend_on_the_batch_size(classifier, inputs, statistics, method, policy):
    sip = None if policy == "none" else policy
    extra = {"stats": statistics} if policy.startswith(("cls", "ins")) else {}
    from sipgrad.hooks.sip import SIPConfig

    config = SIPConfig.parse(sip, **extra)
    maps = [explain(classifier, inputs, target=TARGETS, method=method, sip=config, batch_size=size,
                    **OPTIONS).input_saliency for size in (1, 2, len(inputs))]
    for other in maps[:2]:
        assert _relative(other, maps[2]) <= 1e-4
    if sip is not None and method != "gradcam":  # SIP changes the maps (Grad-CAM: checked in test_sip)
        plain = explain(classifier, inputs, target=TARGETS, method=method, batch_size=len(inputs),
                        **OPTIONS).input_saliency
        assert _relative(plain, maps[2]) > 1e-3


def _per_row(fn, inputs, targets):
    """Reference: each row attributed alone, with its own target."""
    return torch.cat([fn(inputs[i:i + 1], int(targets[i])) for i in range(len(targets))])


def _user_recipes(model):
    ig = IntegratedGradients(model)
    nt = NoiseTunnel(Saliency(model))
    return {
        "Saliency": lambda x, t: Saliency(model).attribute(x, target=t, abs=True),
        "InputXGradient": lambda x, t: InputXGradient(model).attribute(x.clone().requires_grad_(), target=t),
        "IntegratedGradients": lambda x, t: ig.attribute(x, target=t, n_steps=6, internal_batch_size=4),
        # stdevs=0: every sample is the clean input, so the result must equal the per-row reference
        # only if each noisy row was filtered for its own image's class (NoiseTunnel lays samples out
        # [a, a, b, b], not [a, b, a, b]).
        "NoiseTunnel": lambda x, t: nt.attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=t),
        "LayerGradCam": lambda x, t: LayerGradCam(model, model.conv3).attribute(x, target=t),
    }


@pytest.mark.parametrize("recipe", ["Saliency", "InputXGradient", "IntegratedGradients", "NoiseTunnel",
                                    "LayerGradCam"])
def test_users_own_captum_call_inside_sip_needs_only_target(classifier, model, inputs, statistics, recipe):
    fn = _user_recipes(model)[recipe]
    with SIP(classifier, "cls", stats=statistics, quantile=0.3, layers=LAYERS):
        batched = fn(inputs, TARGETS)
        alone = _per_row(fn, inputs, TARGETS)
    plain = fn(inputs, TARGETS)
    assert _relative(batched, alone) <= 1e-4
    assert _relative(plain, batched) > 1e-3  # the class-dependent filter did act


def test_explain_and_a_captum_call_under_cls_agree(classifier, model, inputs, statistics):
    ours = explain(classifier, inputs, target=TARGETS, sip=_cls(statistics)).attribution
    with SIP(classifier, _cls(statistics)):
        theirs = Saliency(model).attribute(inputs, target=TARGETS, abs=True)
    assert _relative(theirs, ours) <= 1e-5


def _cls(statistics):
    from sipgrad.hooks.sip import SIPConfig

    return SIPConfig(policy="cls", quantile=0.3, stats=statistics)


def test_targets_are_read_from_the_logit_gradient():
    grad = torch.zeros(3, 5)
    grad[0, 2], grad[1, 4], grad[2, 0] = 1.0, -1.0, 0.5
    assert targets_from_logit_gradient(grad).tolist() == [2, 4, 0]


def test_predicted_class_is_resolved_in_one_place(classifier, inputs):
    logits = classifier.module(inputs)
    assert torch.equal(resolve_predicted(torch.tensor([-1, 4, -1, 0, -1]), logits),
                       torch.where(torch.tensor([True, False, True, False, True]), logits.argmax(1),
                                   torch.tensor([0, 4, 0, 0, 0])))
    for method in METHODS:
        result = AttributionEngine(classifier, method, options=MethodOptions(**OPTIONS))(inputs)
        assert torch.equal(result.targets, logits.argmax(1)), method
        assert torch.allclose(result.logits, logits, atol=1e-5), method


def test_random_methods_are_reproducible_and_seeded_per_image(classifier, inputs):
    first = explain(classifier, inputs, method="smoothgrad", seed=4, **OPTIONS).input_saliency
    again = explain(classifier, inputs, method="smoothgrad", seed=4, **OPTIONS).input_saliency
    assert torch.equal(first, again)
    # image 2 explained alone at position 0 gets position 0's noise, so it differs from its map at position 2
    alone = explain(classifier, inputs[2:3], method="smoothgrad", seed=4, **OPTIONS).input_saliency
    assert _relative(alone[0], first[2]) > 1e-3
    noisy_ig = explain(classifier, inputs, method="ig", ig_baseline="noise", seed=4, **OPTIONS).input_saliency
    assert _relative(noisy_ig, explain(classifier, inputs, method="ig", ig_baseline="noise", seed=5,
                                       **OPTIONS).input_saliency) > 1e-3


def test_sip_that_does_nothing_says_so_once(classifier, inputs, statistics):
    # Grad-CAM at conv3 with SIP only on conv1 (before it): Grad-CAM's gradient stops at conv3.
    with pytest.warns(UserWarning, match="did nothing.*Grad-CAM") as caught:
        explain(classifier, inputs, method="gradcam", sip=_sip(layers=("conv1",)), batch_size=2)
    assert sum("did nothing" in str(w.message) for w in caught) == 1  # once, not once per batch
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SIP on conv3, after Grad-CAM's conv2: it acts, no warning
        explain(classifier, inputs, method="gradcam", gradcam_layer="conv2", sip=_sip(layers=("conv3",)))


def _sip(**fields):
    from sipgrad.hooks.sip import SIPConfig

    return SIPConfig(policy="topq", **fields)


def test_cls_without_statistics_for_a_class_warns(classifier, model, inputs, tmp_path):
    rng = np.random.default_rng(1)
    items = []
    for i in range(12):  # class 9 gets a single image: no p-values for it
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        items.append((path, 9 if i == 0 else 1 + i % 2))
    stats = calibrate(Classifier.wrap(model, Preprocessing(input_size=32), ClassNames.generic(10),
                                      sip_layers=LAYERS), items, tmp_path / "s.npz", layers=LAYERS, crop=False)
    from sipgrad.hooks.sip import SIPConfig

    with pytest.warns(UserWarning, match="class 9"):
        explain(classifier, inputs[:2], target=[9, 1], sip=SIPConfig(policy="cls", stats=stats))


@pytest.mark.parametrize("recipe, layout", [("Saliency", 1), ("NoiseTunnel", 3)])
def test_cls_keeps_each_rows_own_class_channels(classifier, model, inputs, statistics, recipe, layout):
    """The keep mask of every row is the one of its own image's class, in captum's row layout."""
    from sipgrad.hooks.policies import ClassPolicy

    fn = _user_recipes(model)[recipe]
    with SIP(classifier, "cls", stats=statistics, quantile=0.3, layers=LAYERS) as sip:
        fn(inputs, TARGETS)
        kept = sip.hook.last_keep["conv3"]
    rows = TARGETS.repeat_interleave(layout)  # NoiseTunnel: [a, a, a, b, b, b, ...]
    expected = ClassPolicy(statistics, quantile=0.3).keep_mask("conv3", None, torch.zeros(len(rows), 24, 1, 1), rows)
    assert torch.equal(kept, expected)
    wrong = ClassPolicy(statistics, quantile=0.3).keep_mask("conv3", None, torch.zeros(len(rows), 24, 1, 1),
                                                            TARGETS.repeat(layout))  # the old tiling guess
    assert layout == 1 or not torch.equal(kept, wrong)


def test_lite0_maps_do_not_depend_on_the_batch_size(lite0, asset_dir):
    images = [str(asset_dir / name) for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")]
    for sip in (None, "topq:0.25"):
        maps = [explain(lite0, images, sip=sip, batch_size=size).input_saliency for size in (1, 2, 3)]
        assert max(_relative(m, maps[2]) for m in maps[:2]) <= 1e-4, sip


def test_old_public_names_keep_working_with_a_warning(classifier):
    from sipgrad.attribution.explain import evaluation_mode  # noqa: F401  (moved, still importable)
    from sipgrad.attribution.methods import SINGLE_PASS

    assert list(METHODS) == ["grad", "inputgrad", "smoothgrad", "ig", "gradcam"] and "ig" in METHODS
    with pytest.warns(DeprecationWarning):
        assert METHODS[0] == "grad"
    assert SINGLE_PASS == {"grad", "inputgrad", "gradcam"}
    with SIP(classifier, "topq:0.25") as sip, pytest.warns(DeprecationWarning, match="no longer needed"):
        sip.set_targets(torch.tensor([1]))


@pytest.mark.parametrize("layer", ["", "  ", 3])
def test_an_empty_or_non_text_gradcam_layer_is_refused(layer):
    # "" silently meant the model's default layer; None is how to ask for that.
    with pytest.raises(SipgradError, match="gradcam_layer must name a module"):
        MethodOptions(gradcam_layer=layer)
    assert MethodOptions(gradcam_layer=None).gradcam_layer is None and MethodOptions(gradcam_layer="layer3")


class _Outputs(torch.nn.Module):
    """A small CNN whose output is reshaped into what a user's model might return instead of B x K logits."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net, self.kind = make_small_cnn(), kind

    def forward(self, x):
        logits = self.net(x)
        return {"tuple": lambda: (logits,), "dict": lambda: {"logits": logits}, "3d": lambda: logits[..., None],
                "1d": lambda: logits[:, 0]}[self.kind]()


@pytest.mark.parametrize("kind, got", [("tuple", "a tuple"), ("dict", "a dict"), ("3d", r"shape \(2, 10, 1\)"),
                                       ("1d", r"shape \(2,\)")])
@pytest.mark.parametrize("method", ["grad", "ig"])
def test_a_model_that_does_not_return_logits_is_refused_in_one_line(inputs, kind, got, method):
    wrapped = Classifier.wrap(_Outputs(kind), Preprocessing(input_size=32), ClassNames.generic(10), name="mine")
    with pytest.raises(SipgradError, match=rf"mine must return a B x K tensor of logits \(B = 2 here\), got {got}"):
        explain(wrapped, inputs[:2], method=method, ig_steps=2)


def test_logits_and_class_names_of_different_lengths_are_refused(model, inputs):
    wrapped = Classifier.wrap(model, Preprocessing(input_size=32), ClassNames.generic(12), name="small")
    with pytest.raises(SipgradError, match="small returns 10 logits per image but its classes name 12"):
        explain(wrapped, inputs[:2])


def test_a_fully_convolutional_model_gets_its_own_class_count():
    """No nn.Linear to read: the output width of one blank pass, not ImageNet's 1000 classes."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 10, 1),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).train()
    wrapped = Classifier.wrap(net, Preprocessing(input_size=32))
    assert len(wrapped.classes) == 10 and wrapped.classes[1] != "goldfish"
    assert net.training  # the blank pass left the train flag as it was
    with pytest.raises(SipgradError, match="target"):
        explain(wrapped, torch.randn(1, 3, 32, 32), target=500)


class _SqueezeExcite(torch.nn.Module):
    """Linear layers inside the network (squeeze-excitation), a 1 x 1 conv head with 10 outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.squeeze, self.excite = torch.nn.Linear(16, 4), torch.nn.Linear(4, 16)
        self.head = torch.nn.Conv2d(16, 10, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(h.mean(dim=(2, 3))))))
        return self.head(h * gate[:, :, None, None]).mean(dim=(2, 3))


def test_the_class_count_is_the_models_output_width_not_its_last_linear():
    calls = []
    net = _SqueezeExcite()
    net.register_forward_hook(lambda *args: calls.append(1))
    wrapped = Classifier.wrap(net, Preprocessing(input_size=32))
    assert len(wrapped.classes) == 10  # the last Linear (excite) has 16 outputs
    assert len(calls) == 1  # one blank pass gives both the class count and Grad-CAM's layer
    assert explain(wrapped, torch.randn(1, 3, 32, 32), target=9).targets.tolist() == [9]
    compiled = Classifier.wrap(torch.compile(net, backend="eager"), Preprocessing(input_size=32))
    assert compiled.name == "_SqueezeExcite" and compiled.module is net
    built = Classifier(torch.compile(net, backend="eager"), "se", Preprocessing(input_size=32), ClassNames.generic(10))
    assert built.module is net  # constructed directly, too


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(0, 3, 32, 32), r"B >= 1, got shape \(0, 3, 32, 32\)"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "must be floating point"),
])
def test_unusable_input_tensors_are_refused_in_one_line(classifier, bad, message):
    with pytest.raises(SipgradError, match=message):
        explain(classifier, bad)
    with pytest.raises(SipgradError, match="inputs must be"):
        AttributionEngine(classifier, "grad")(bad)


def test_a_one_element_tuple_layer_output_still_works_for_gradcam(inputs):
    """captum unpacks a layer output of one tensor in a tuple; the feature-map check must too."""
    class Block(torch.nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return (self.conv(x),)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.block, self.head = Block(torch.nn.Conv2d(3, 8, 3, padding=1)), torch.nn.Linear(8, 10)

        def forward(self, x):
            return self.head(torch.relu(self.block(x)[0]).mean(dim=(2, 3)))

    wrapped = Classifier.wrap(Net(), Preprocessing(input_size=32), ClassNames.generic(10))
    result = explain(wrapped, inputs[:2], method="gradcam", gradcam_layer="block")
    assert result.attribution.shape == (2, 1, 32, 32) and result.attribution.abs().sum() > 0


def test_wrong_length_indices_are_named_before_the_values_are_checked(classifier, inputs):
    bad = inputs[:2].clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(SipgradError, match="1 image indices given for a batch of 2"):
        AttributionEngine(classifier, "grad")(bad, indices=torch.tensor([7]))


def test_a_nan_input_is_refused_naming_its_position(classifier, inputs):
    bad = inputs.clone()
    bad[3, 1, 5, 5] = float("nan")
    bad[4, 0, 0, 0] = float("inf")
    with pytest.raises(SipgradError, match=r"input 3 holds NaN or infinite values \(and 1 more\)"):
        explain(classifier, bad)
    with pytest.raises(SipgradError, match="input 13 holds NaN"):
        explain(classifier, bad[3:4], indices=[13])


def test_float64_inputs_are_cast_to_the_models_precision(classifier, inputs):
    ours = explain(classifier, inputs.double(), target=TARGETS).attribution
    assert ours.dtype == torch.float32
    assert torch.equal(ours, explain(classifier, inputs, target=TARGETS).attribution)


def test_sip_or_gradcam_on_a_layer_without_a_feature_map_is_refused(inputs):
    net = make_small_cnn()
    wrapped = Classifier.wrap(net, Preprocessing(input_size=32), ClassNames.generic(10))
    linear = next(name for name, m in net.named_modules() if isinstance(m, torch.nn.Linear))
    with pytest.raises(SipgradError, match=rf"SIP layer '{linear}' outputs shape \(2, 10\); SIP filters"):
        explain(wrapped, inputs[:2], sip=_sip(fraction=0.5, layers=(linear,)))
    with pytest.raises(SipgradError, match=rf"Grad-CAM layer '{linear}' outputs shape \(2, 10\)"):
        explain(wrapped, inputs[:2], method="gradcam", gradcam_layer=linear)


def test_a_compiled_model_is_explained_through_its_original_module(model, inputs):
    """Compiled code skips module hooks: SIP would silently do nothing after a first plain call."""
    compiled = torch.compile(model, backend="eager")
    wrapped = Classifier.wrap(compiled, Preprocessing(input_size=32), ClassNames.generic(10), sip_layers=LAYERS)
    assert wrapped.module is model
    plain = explain(wrapped, inputs[:2], target=[1, 2]).attribution
    filtered = explain(wrapped, inputs[:2], sip="topq:0.25", target=[1, 2]).attribution
    reference = explain(Classifier.wrap(model, Preprocessing(input_size=32), ClassNames.generic(10),
                                        sip_layers=LAYERS), inputs[:2], sip="topq:0.25", target=[1, 2]).attribution
    assert not torch.allclose(plain, filtered) and torch.equal(filtered, reference)
    with pytest.raises(SipgradError, match=r"torch.compile'd model .* \(model._orig_mod\)"):
        SIP(compiled, "topq:0.25", layers=LAYERS)
