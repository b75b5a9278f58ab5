"""Validated, immutable inputs: hardware profiles, MoE models, run settings."""
from moesim.config.errors import ConfigError
from moesim.config.hardware import HardwareProfile, available_profiles, load_profile
from moesim.config.model import MODEL_FIELDS, MoEModel, available_models, load_model

__all__ = ["ConfigError", "HardwareProfile", "MoEModel", "MODEL_FIELDS", "available_models",
           "available_profiles", "load_model", "load_profile"]
