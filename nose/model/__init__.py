"""Loading, family adapters and attention switches."""

from nose.model.adapters import ADAPTERS, FamilyAdapter, adapter_for, supported_families
from nose.model.loading import LoadedModel, from_module, load_model
from nose.model.switches import MODES, AttentionSwitch, attention_switched

__all__ = ["ADAPTERS", "FamilyAdapter", "adapter_for", "supported_families", "LoadedModel",
           "from_module", "load_model", "MODES", "AttentionSwitch", "attention_switched"]
