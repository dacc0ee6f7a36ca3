"""Policies: MCPP, the baselines, the feasibility rule, the policy registry and DAG pools.

A policy only decides (`decide(PlanState) -> Allocation`); it never calls a model.
"""

from policies.baselines import AlwaysCheapest, AlwaysStrongest, FixedModel
from policies.budget_splits import StaticSplit
from policies.dag_pool import (
    PoolNode,
    PoolProblem,
    PoolSample,
    parse_pool_line,
    pool_workflow,
    read_pool,
    write_pool,
)
from policies.direct_router import DirectRouter
from policies.feasibility import MAX_SAMPLES, default_cap, repair, samples_that_fit
from policies.mcpp import MCPP, MCPPConfig
from policies.pacing import DualMirrorDescent, ThresholdRouter
from policies.registry import make_policy, policy_names, register
from policies.synthetic import layered_limits, layered_problem

__all__ = [
    "MAX_SAMPLES",
    "MCPP",
    "AlwaysCheapest",
    "AlwaysStrongest",
    "DirectRouter",
    "DualMirrorDescent",
    "FixedModel",
    "MCPPConfig",
    "PoolNode",
    "PoolProblem",
    "PoolSample",
    "StaticSplit",
    "ThresholdRouter",
    "default_cap",
    "layered_limits",
    "layered_problem",
    "make_policy",
    "parse_pool_line",
    "policy_names",
    "pool_workflow",
    "read_pool",
    "register",
    "repair",
    "samples_that_fit",
    "write_pool",
]
