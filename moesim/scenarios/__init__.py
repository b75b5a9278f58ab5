"""Scenarios: YAML files describing a sweep, validated up front, run into results tables."""
from moesim.scenarios.runner import RunResult, evaluate, run_scenario
from moesim.scenarios.schema import Scenario, load_scenario, scenario_from_text
from moesim.scenarios.sweep import expand

__all__ = ["RunResult", "Scenario", "evaluate", "expand", "load_scenario", "run_scenario",
           "scenario_from_text"]
