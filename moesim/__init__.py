"""moesim: performance simulator and benchmark harness for Mixture-of-Experts layers.

The public names load on first use (PEP 562 ``__getattr__``), so ``import moesim`` costs no
pandas, pydantic or scipy: ``moesim.predict`` imports the prediction stack when first touched.
"""
import sys
import types

from moesim.lazy import lazy_exports

__version__ = "0.1.0"

#: Public name -> module that defines it.
_PUBLIC = {"ConfigError": "moesim.config.errors", "MoEModel": "moesim.config.model",
           "load_model": "moesim.config.model", "load_profile": "moesim.config.hardware",
           "predict": "moesim.predict", "predict_many": "moesim.serving",
           "predict_model": "moesim.serving", "serving_curve": "moesim.serving"}
__all__ = sorted(_PUBLIC) + ["__version__"]
__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)


class _Package(types.ModuleType):
    """``moesim.predict`` stays the function when the submodule ``moesim.predict`` is imported.

    Importing a submodule sets it as an attribute of its package; for ``predict`` that would
    hide the public function behind the module of the same name, so the function is kept.
    """

    def __setattr__(self, name: str, value) -> None:
        if name == "predict" and isinstance(value, types.ModuleType):
            value = value.predict
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
