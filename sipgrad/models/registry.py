"""The model zoo: building models, loading weights, and what each architecture needs.

A ``Classifier`` bundles a ``torch.nn.Module`` with what explaining it requires: its
preprocessing, its class names, the layer Grad-CAM should use, and the layers SIP
hooks by default. Any user model can be wrapped with ``Classifier.wrap``.
"""

from __future__ import annotations

import os
import pickle
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from sipgrad.devices import usable_device
from sipgrad.errors import SipgradError, WeightsUnavailableError
from sipgrad.models.classes import ClassNames, imagenet_classes
from sipgrad.models.efficientnet_lite import EfficientNetLite0, lite0_weights_path
from sipgrad.models.preprocessing import Preprocessing

LITE_PREPROCESSING = Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


@dataclass
class Classifier:
    """A classifier ready to be explained.

    Attributes:
        module: the network, in eval mode; sipgrad never modifies it.
        name: a short name shown in reports.
        preprocessing: how images become inputs.
        classes: the class names, index-aligned with the logits.
        gradcam_layer: dotted module name used by Grad-CAM by default.
        sip_layers: dotted names of the conv layers SIP filters by default.
    """

    module: nn.Module
    name: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    classes: ClassNames = field(default_factory=imagenet_classes)
    gradcam_layer: str | None = None
    sip_layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if is_compiled(self.module):  # compiled code skips module hooks: explain the module itself
            self.module = self.module._orig_mod
        if self.gradcam_layer is None:
            self.gradcam_layer = default_gradcam_layer(self.module, self.preprocessing.input_size)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.module(inputs)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> "Classifier":
        self.module.to(device)
        return self

    @classmethod
    def wrap(cls, module: nn.Module, preprocessing: Preprocessing | None = None,
             classes: ClassNames | None = None, name: str | None = None,
             gradcam_layer: str | None = None, sip_layers: tuple[str, ...] | None = None) -> "Classifier":
        """Wrap any ``nn.Module`` classifier (logits out) for use with sipgrad.

        The module is not modified; ``explain`` switches it to eval mode only while it runs. A
        ``torch.compile``'d module is explained through its original module (``_orig_mod``, the
        same parameters): compiled code does not run the hooks SIP and Grad-CAM rely on. Without
        ``classes``, the classes are ImageNet's when the model has 1000 outputs, else generic
        names. The output count and Grad-CAM's default layer come from one blank pass
        (``probe_model``); a model that cannot run on a blank image falls back to its last
        ``nn.Linear``'s output count and its last ``Conv2d``.
        """
        module = module._orig_mod if is_compiled(module) else module
        preprocessing = preprocessing or Preprocessing()
        if classes is None:
            probe = probe_model(module, preprocessing.input_size)
            gradcam_layer = gradcam_layer or probe.gradcam_layer
            out_features = probe.output_width or getattr(_last_linear(module), "out_features", None)
            classes = imagenet_classes() if out_features in (None, 1000) else ClassNames.generic(out_features)
        return cls(module, name or type(module).__name__, preprocessing, classes, gradcam_layer, sip_layers)


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` is ``torch.compile``'s wrapper (without importing torch._dynamo)."""
    return type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module)


def _blank_pass(module: nn.Module, input_size: int) -> object:
    """The module's output on one all-zero image, in eval mode without gradients; train flags restored.

    Raises whatever the model raises (a model that needs another input shape, say).
    """
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    parameter = next(module.parameters())
    channels = convs[0].in_channels if convs else 3
    blank = torch.zeros(1, channels, input_size, input_size, device=parameter.device, dtype=parameter.dtype)
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            return module(blank)
    finally:
        for m, flag in flags:
            m.training = flag


def _last_linear(module: nn.Module) -> nn.Module | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def conv_names(module: nn.Module) -> list[str]:
    """Dotted names of every ``nn.Conv2d`` in model (registration) order."""
    return [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]


ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class ModelProbe:
    """What one blank pass tells about a model: Grad-CAM's default layer and the output count.

    ``output_width`` is K when the output of the pass is a 1 x K tensor, else ``None`` (also
    when the model cannot run on a blank image).
    """

    gradcam_layer: str | None
    output_width: int | None


def probe_model(module: nn.Module, input_size: int = 224) -> ModelProbe:
    """Run the model once on a blank input and watch every module's output (see ``default_gradcam_layer``)."""
    calls: dict[str, int] = {}
    finished: list[str] = []
    names = {m: name for name, m in module.named_modules() if name}

    def watch(mod: nn.Module, args: tuple, output: object) -> None:
        name = names[mod]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(mod, ADAPTIVE_POOLS):  # a classifier head's pooling, not a conv block
            return
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[2] * output.shape[3] > 1:
            finished.append(name)

    has_convs = any(isinstance(m, nn.Conv2d) for m in module.modules())
    handles = [m.register_forward_hook(watch) for m in names] if has_convs else []
    try:
        output = _blank_pass(module, input_size)
    except Exception:  # any model that cannot run on a blank input: keep the old rule
        return ModelProbe(last_conv_name(module), None)
    finally:
        for handle in handles:
            handle.remove()
    width = output.shape[1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None
    once = [name for name in finished if calls[name] == 1]
    return ModelProbe((once[-1] if once else last_conv_name(module)) if has_convs else None, width)


def default_gradcam_layer(module: nn.Module, input_size: int = 224) -> str | None:
    """The output of the last convolutional block, after its activation: Grad-CAM's usual layer.

    Found by running the model once on a blank input and watching every module's output:
    the module that finishes last with a spatial (B x C x H x W, H*W > 1) output and runs
    once per pass (a ReLU shared inside a block runs twice and is skipped for its block).
    That is ``layer4`` of a ResNet, the head activation of an EfficientNet, VGG's last
    feature stage. Falls back to the last ``Conv2d`` when tracing is not possible.
    """
    if not any(isinstance(m, nn.Conv2d) for m in module.modules()):
        return None
    return probe_model(module, input_size).gradcam_layer


def last_conv_name(module: nn.Module) -> str | None:
    names = conv_names(module)
    return names[-1] if names else None


# --------------------------------------------------------------------------------------------
# Architectures


@dataclass(frozen=True)
class ModelSpec:
    """How to build one named model and explain it well."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    weights_url: str | None  # torchvision download URL; None for weights shipped in a package
    gradcam_layer: str
    sip_layers: Callable[[nn.Module], tuple[str, ...]]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    classes: Callable[[], ClassNames] = imagenet_classes
    trained_by: str | None = None  # models without published weights: the script that trains them


def _resnet_sip_layers(model: nn.Module) -> tuple[str, ...]:
    # Every conv of the layer3 and layer4 blocks, not the downsample shortcuts.
    return tuple(n for n in conv_names(model) if n.startswith(("layer3.", "layer4.")) and "downsample" not in n)


def _vgg_sip_layers(model: nn.Module) -> tuple[str, ...]:
    # The convs in the upper half of `features`.
    half = len(model.features) // 2
    return tuple(f"features.{i}" for i, m in enumerate(model.features) if i >= half and isinstance(m, nn.Conv2d))


def _efficientnet_b0_sip_layers(model: nn.Module) -> tuple[str, ...]:
    return ("features.6.0.block.1.0", "features.7.0.block.1.0", "features.8.0")  # as in ParchGrad


def _lite0_sip_layers(model: nn.Module) -> tuple[str, ...]:
    # Chosen by measurement (docs/results.md, docs/benchmarks.md): on the 240 composites,
    # topq:0.25 on the depthwise convs of the last 8 blocks plus the head conv raised box energy
    # from 0.359 to 0.428 (better on 88%, like the last half of all convs, which reaches 0.460),
    # at under half the hook cost, within the 5% overhead budget at batch 16 on CPU. The expand or
    # project convs alone gain almost nothing; ParchGrad's B0 counterparts and the head alone hurt.
    # `--layer-ratio 0.5` restores the 24-layer setting.
    depthwise = [name for name in conv_names(model) if name.endswith("._depthwise_conv")]
    return (*depthwise[-8:], "_conv_head")


def _torchvision(builder: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, builder)(weights=None)

    return build


_TV = "https://download.pytorch.org/models/"
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("efficientnet_lite0", "EfficientNet-Lite0, TF-converted ImageNet weights (offline, default)",
                  EfficientNetLite0, None, "_head_act", _lite0_sip_layers, LITE_PREPROCESSING),
        ModelSpec("resnet18", "ResNet-18 (torchvision IMAGENET1K_V1)", _torchvision("resnet18"),
                  _TV + "resnet18-f37072fd.pth", "layer4", _resnet_sip_layers),
        ModelSpec("vgg16", "VGG-16 (torchvision IMAGENET1K_V1)", _torchvision("vgg16"),
                  _TV + "vgg16-397923af.pth", "features.30", _vgg_sip_layers),
        ModelSpec("vgg16_bn", "VGG-16 with batch norm (torchvision IMAGENET1K_V1)", _torchvision("vgg16_bn"),
                  _TV + "vgg16_bn-6c64b313.pth", "features.43", _vgg_sip_layers),
        ModelSpec("efficientnet_b0", "EfficientNet-B0 (torchvision IMAGENET1K_V1)", _torchvision("efficientnet_b0"),
                  _TV + "efficientnet_b0_rwightman-7f5810bc.pth", "features.8", _efficientnet_b0_sip_layers),
    )
}
def _digits_specs() -> tuple[ModelSpec, ...]:
    from sipgrad.models.digits import DIGIT_CLASSES, DIGITS_PREPROCESSING, DigitsResNet, DigitsVGG

    script = "benchmarks/train_cluttered_digits.py"
    resnet_layers = lambda m: tuple(n for n in conv_names(m) if n.startswith(("layer2.", "layer3."))  # noqa: E731
                                    and "downsample" not in n)
    vgg_layers = lambda m: tuple(f"features.{i}" for i, x in enumerate(m.features)  # noqa: E731
                                 if i >= len(m.features) // 2 and isinstance(x, nn.Conv2d))
    return (
        ModelSpec("digits_resnet", "ResNet-style CNN for cluttered digits (train it: weights=FILE)", DigitsResNet,
                  None, "layer3", resnet_layers, DIGITS_PREPROCESSING, lambda: DIGIT_CLASSES, script),
        ModelSpec("digits_vgg", "VGG-style CNN for cluttered digits (train it: weights=FILE)", DigitsVGG,
                  None, "features.20", vgg_layers, DIGITS_PREPROCESSING, lambda: DIGIT_CLASSES, script),
    )


MODELS.update({spec.name: spec for spec in _digits_specs()})
DEFAULT_MODEL = "efficientnet_lite0"


def cached_weights_path(spec: ModelSpec) -> Path | None:
    """Where the weights of ``spec`` are (or would be) on disk."""
    if spec.trained_by is not None:
        return None
    if spec.weights_url is None:
        return lite0_weights_path()
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(spec.weights_url)


def weights_available_offline(name: str) -> bool:
    """True when ``name``'s pretrained weights are on disk (no download needed)."""
    path = cached_weights_path(MODELS[name])
    return path is not None and path.is_file()


def _download(spec: ModelSpec, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(spec.weights_url, str(destination), progress=True)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise WeightsUnavailableError(
            f"{spec.name}: pretrained weights are not cached and could not be downloaded ({error.__class__.__name__}); "
            f"pass weights=FILE to load a local state dict, or pretrained=False for random weights"
        ) from None


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict safely (``weights_only=True``), accepting a {'state_dict': ...} wrapper."""
    path = Path(path)
    if path.is_dir():
        raise SipgradError(f"{path}: is a folder, not a weights file")
    if not path.is_file():
        raise SipgradError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, zip errors, refused globals
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        with open(path, "rb") as handle:
            head = handle.read(2)
        if not (head == b"PK" or head[:1] == b"\x80"):  # neither torch.save's zip nor its legacy pickle (an image, text)
            reason = "not a file written by torch.save, or a truncated one"
        elif isinstance(error, (KeyError, EOFError, pickle.UnpicklingError)) and "weights_only" not in str(error):
            # torch's legacy reader meets text or a truncated file as a bare KeyError (a number) or EOFError
            reason = "not a file written by torch.save, or a truncated one"
        elif "PytorchStreamReader" in reason:  # a damaged zip checkpoint: keep the first sentence, not torch's essay
            reason = "a damaged torch.save archive: " + reason.split(": ", 1)[-1].split(". ")[0]
        elif "weights_only" in str(error) or "Weights only load failed" in reason:
            # torch's message advises weights_only=False, i.e. running the file's code: never do that.
            reason = "it holds Python objects besides tensors, and sipgrad loads only plain tensors"
        raise SipgradError(f"{path}: not a loadable state dict ({reason})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SipgradError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str, name: str) -> None:
    """Refuse weights that do not fit ``module``, naming the first tensor that differs and both shapes."""
    expected = module.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise SipgradError(f"{source}: does not fit {name}: tensor {key!r} {tuple(tensor.shape)} is missing")
        given = state[key]
        if not isinstance(given, torch.Tensor):
            raise SipgradError(f"{source}: does not fit {name}: {key!r} is a {type(given).__name__}, not a tensor")
        if tuple(given.shape) != tuple(tensor.shape):
            raise SipgradError(f"{source}: does not fit {name}: tensor {key!r} has shape {tuple(given.shape)}, "
                               f"the model needs {tuple(tensor.shape)}")
        if given.is_floating_point() and not bool(torch.isfinite(given).all()):
            # A diverged checkpoint: every prediction and map would be NaN, with nothing to say why.
            raise SipgradError(f"{source}: tensor {key!r} holds NaN or infinite values (a diverged checkpoint?)")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise SipgradError(f"{source}: does not fit {name}: unexpected tensor {unexpected[0]!r}")


def load_model(name: str = DEFAULT_MODEL, weights: str | os.PathLike | None = None, pretrained: bool = True,
               device: str | torch.device = "cpu") -> Classifier:
    """Build a zoo model ready for explanation.

    Args:
        name: one of ``sipgrad.models.MODELS`` (``efficientnet_lite0`` is the default and offline).
        weights: a local state-dict file to load instead of the pretrained weights.
        pretrained: ``False`` gives random initialisation (ignored when ``weights`` is given).
        device: where to put the model.

    Raises:
        SipgradError: unknown name or device, unreadable weights file, or weights unavailable offline.
    """
    if name not in MODELS:
        raise SipgradError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    device = usable_device(device)
    spec = MODELS[name]
    module = spec.build()
    if weights is not None:
        state = load_state_dict_file(weights)
    elif pretrained and spec.trained_by is not None:
        raise SipgradError(f"{name} has no published weights: train it with {spec.trained_by} (in the source "
                           f"repository, not in the installed package) and pass "
                           f"weights=FILE, or use pretrained=False for random weights")
    elif pretrained:
        path = cached_weights_path(spec)
        if spec.weights_url is not None and not path.is_file():
            _download(spec, path)
        state = load_state_dict_file(path)
    else:
        state = None
    if state is not None:
        check_state_dict(module, state, f"{weights if weights is not None else 'pretrained weights'}", name)
        module.load_state_dict(state, strict=True)
    module.eval().to(device)
    return Classifier(module, name, spec.preprocessing, spec.classes(), spec.gradcam_layer, spec.sip_layers(module))
