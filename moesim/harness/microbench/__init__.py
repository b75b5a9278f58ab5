"""Microbenchmarks (torch): dense and grouped expert GEMMs, memory copy, per-op overhead,
router + top-k, permute/unpermute, activation. ``suite.run_suite`` runs them from a ``Plan``."""
