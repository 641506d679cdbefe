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
