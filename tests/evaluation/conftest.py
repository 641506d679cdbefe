"""Fixtures shared by the evaluation tests."""

import pytest


@pytest.fixture
def small_classifier(small_cnn):
    """The untrained SmallCNN as a 10-class Classifier on 32 x 32 inputs, with SIP on conv2 and conv3."""
    from sipgrad import Classifier, Preprocessing
    from sipgrad.models import ClassNames

    return Classifier.wrap(small_cnn, Preprocessing(input_size=32), ClassNames.generic(10), name="small",
                           sip_layers=("conv2", "conv3"))
