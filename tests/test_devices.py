"""Choosing a usable device: what is refused, named in one line."""

import pytest
import torch


def test_device_index_equal_to_the_count_is_refused(monkeypatch):
    from sipgrad.devices import usable_device
    from sipgrad.errors import SipgradError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert usable_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(SipgradError, match="has 1 cuda device"):
        usable_device("cuda:1")
