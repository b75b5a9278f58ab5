"""Calibration from NVIDIA AIConfigurator's measured performance database.

``aiconfigurator-core`` (Apache-2.0, optional extra ``pip install moesim[aic]``) ships tables of
kernels timed on real GPUs by AIConfigurator's collectors. :mod:`.reader` finds and loads them,
:mod:`.fit` turns the primitive tables (GEMM, all-to-all, collectives) into a profile,
:mod:`.moe` maps ``moe_perf`` rows onto moesim's layer model. Predicting never needs the extra.
"""
