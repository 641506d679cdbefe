"""Gradient hooks: the hook core and SIP."""

from sipgrad.hooks.core import ForwardRecord, GradientHook, HookedModel
from sipgrad.hooks.filter import channel_scales, filter_gradient
from sipgrad.hooks.sip import POLICY_NAMES, SIP, SIPConfig, resolve_layers

__all__ = ["ForwardRecord", "GradientHook", "HookedModel", "SIP", "SIPConfig",
           "POLICY_NAMES", "channel_scales", "filter_gradient", "resolve_layers"]
