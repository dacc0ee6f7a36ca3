"""Policies: MCPP, the baselines, the policy registry and the DAG-pool importer.

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
from policies.mcpp import MCPP, MCPPConfig
from policies.pacing import DualMirrorDescent, ThresholdRouter
from policies.registry import make_policy, policy_names, register

__all__ = [
    "MCPP",
    "AlwaysCheapest",
    "AlwaysStrongest",
    "DualMirrorDescent",
    "FixedModel",
    "MCPPConfig",
    "PoolNode",
    "PoolProblem",
    "PoolSample",
    "StaticSplit",
    "ThresholdRouter",
    "make_policy",
    "parse_pool_line",
    "policy_names",
    "pool_workflow",
    "read_pool",
    "register",
    "write_pool",
]
