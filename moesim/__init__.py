"""moesim: performance simulator and benchmark harness for Mixture-of-Experts layers."""
from moesim.config import ConfigError, MoEModel, load_model, load_profile
from moesim.predict import predict, predict_many

__version__ = "0.1.0"
__all__ = ["ConfigError", "MoEModel", "load_model", "load_profile", "predict", "predict_many",
           "__version__"]
