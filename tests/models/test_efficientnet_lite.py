import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from PIL import Image


def _top1(classifier, image: Image.Image) -> str:
    inputs, _ = classifier.preprocessing.prepare(image)
    with torch.no_grad():
        logits = classifier(inputs[None])
    return classifier.classes[int(logits.argmax())]


def test_lite0_recognises_real_photos(lite0, photos):
    """The TF-converted weights only give these answers if padding, ReLU6, BN eps and input scaling are right."""
    assert lite0.preprocessing.input_size == 224
    assert _top1(lite0, Image.fromarray(photos["chelsea"])) == "Egyptian cat"
    assert _top1(lite0, Image.fromarray(photos["coffee"])) == "espresso"


def test_same_padding_is_asymmetric_like_tensorflow():
    from sipgrad.models.efficientnet_lite import Conv2dSame

    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    out = conv(torch.ones(1, 1, 4, 4))
    # TF "same" for even input, stride 2: total pad 1, all of it on the bottom/right.
    assert out.shape[-2:] == (2, 2)
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


@settings(max_examples=30, deadline=None)
@given(kernel=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]), height=st.integers(3, 12),
       width=st.integers(3, 12), depthwise=st.booleans())
def test_same_padding_fast_path_equals_explicit_padding(kernel, stride, height, width, depthwise):
    """Symmetric padding handed to the conv gives exactly what an explicit zero pad gives."""
    from sipgrad.models.efficientnet_lite import Conv2dSame

    torch.manual_seed(0)
    channels = 4
    conv = Conv2dSame(channels, channels, kernel, stride=stride, groups=channels if depthwise else 1, bias=False)
    x = torch.randn(2, channels, height, width, requires_grad=True)
    pads = conv.same_padding(height, width)
    reference = F.conv2d(F.pad(x, pads), conv.weight, None, conv.stride, 0, 1, conv.groups)
    out = conv(x)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    expected, = torch.autograd.grad(reference, x, grad)
    actual, = torch.autograd.grad(out, x, grad)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
