"""Validated, immutable inputs: hardware profiles, MoE models, run settings.

The pydantic models load on first use (PEP 562 ``__getattr__``): ``moesim.core`` imports this
package's pure modules (``errors``, ``dtypes``) without paying for pydantic.
"""
from moesim.lazy import lazy_exports

#: Public name -> module that defines it.
_PUBLIC = {"ConfigError": "moesim.config.errors", "HardwareProfile": "moesim.config.hardware",
           "available_profiles": "moesim.config.hardware", "load_profile": "moesim.config.hardware",
           "MODEL_FIELDS": "moesim.config.model", "MoEModel": "moesim.config.model",
           "available_models": "moesim.config.model", "load_model": "moesim.config.model"}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
