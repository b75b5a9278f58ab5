"""Placement and replication search: which experts go on which device, and how many copies.

A placement algorithm is ``(loads [num_experts], Layout) -> Placement`` (see ``layout``),
registered by name in ``strategies`` (``contiguous``, ``round-robin``, ``greedy``, ``eplb``,
``greedy+ls``, ``eplb+ls``) or passed as a callable. ``compare`` times every candidate with
``moesim.predict`` and adds the cost of moving experts (``movement``) and the staleness under
routing drift (``traces``); ``files`` writes the winner for ``moesim predict --placement``.
"""
from moesim.placement_search.comparison import Comparison, Problem, compare, make_problem
from moesim.placement_search.files import read_placement, write_placement
from moesim.placement_search.layout import Layout, from_device_lists
from moesim.placement_search.movement import Movement, movement_cost
from moesim.placement_search.strategies import STRATEGIES, register, resolve, run_strategy

__all__ = ["STRATEGIES", "Comparison", "Layout", "Movement", "Problem", "compare",
           "from_device_lists", "make_problem", "movement_cost", "read_placement", "register",
           "resolve", "run_strategy", "write_placement"]
