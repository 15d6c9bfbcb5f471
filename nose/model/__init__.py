"""Loading, family adapters and attention switches."""

from nose.model.adapters import ADAPTERS, FamilyAdapter, adapter_for, supported_families
from nose.model.loading import LoadedModel, ModelRef, from_module, load_model, resolve_model
from nose.model.switches import MODES, AttentionSwitch, attention_switched

__all__ = ["ADAPTERS", "FamilyAdapter", "adapter_for", "supported_families", "LoadedModel", "ModelRef", "resolve_model",
           "from_module", "load_model", "MODES", "AttentionSwitch", "attention_switched"]
