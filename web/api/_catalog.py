"""The routes of what the server can run: `/workflows` and `/models` (with learned success and latency)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Annotated, Final

from fastapi import APIRouter, Depends
from sqlalchemy.engine import Engine

from storage import learn_estimates
from web.api._access import require
from web.api._state import ApiState, api_state
from web.api.registry import WorkflowRegistry
from web.api.schemas import LearnedEstimateOut, ModelOut, WorkflowOut, WorkflowSubtaskOut

__all__ = ["MODELS_FRESH_S", "catalog_models", "catalog_router", "known_models"]

MODELS_FRESH_S: Final = 10.0
"""How long `GET /models` and the dashboard's models page reuse what they learned (learning
reads hundreds of runs per workflow; a page reloaded in a loop must not redo it)."""

State = Annotated[ApiState, Depends(api_state)]


def catalog_models(registry: WorkflowRegistry, engine: Engine) -> list[ModelOut]:
    """Every model of the registered workflows' catalogs, by name and litellm model, with what runs taught."""
    found: dict[tuple[str, str], ModelOut] = {}
    for registered in registry:
        used = registered.models
        models = {name: registered.catalog.get(name).litellm_model for name in used}
        learned = learn_estimates(
            engine,
            registered.name,
            models=models,
            min_samples=1,
            include_simulated=bool(registered.simulated),
        )
        for name in used:
            spec = registered.catalog.get(name)
            key = (spec.name, spec.litellm_model)
            model = found.get(key)
            if model is None:
                model = ModelOut(
                    name=spec.name,
                    litellm_model=spec.litellm_model,
                    provider=spec.provider,
                    tier=spec.tier,
                    input_price_per_mtok=spec.input_price_per_mtok or 0,
                    output_price_per_mtok=spec.output_price_per_mtok or 0,
                    simulated=spec.simulated,
                    workflows=[],
                    learned=[],
                )
                found[key] = model
            model.workflows.append(registered.name)
            for (subtask, model_name), estimate in sorted(learned.items()):
                if model_name != name or not estimate.samples:
                    continue
                model.learned.append(
                    LearnedEstimateOut(
                        workflow=registered.name,
                        subtask=subtask,
                        samples=len(estimate.samples),
                        success_rate=sum(s.success for s in estimate.samples) / len(estimate.samples),
                        mean_latency_s=statistics.fmean(s.latency_s for s in estimate.samples),
                    )
                )
    return sorted(found.values(), key=lambda m: (m.name, m.litellm_model))


async def known_models(api: ApiState) -> list[ModelOut]:
    """`catalog_models` of the app's workflows, learned at most `MODELS_FRESH_S` ago."""
    now = time.monotonic()
    cached = api.cache.get("models")
    if cached is not None and now - cached[0] < MODELS_FRESH_S:
        models: list[ModelOut] = cached[1]
        return models
    models = await asyncio.to_thread(catalog_models, api.workflows, api.engine)
    api.cache["models"] = (now, models)
    return models


def catalog_router() -> APIRouter:
    """`/workflows` and `/models`."""
    router = APIRouter(tags=["catalog"], dependencies=[Depends(require("read"))])

    @router.get("/workflows", response_model=list[WorkflowOut], summary="The workflows this server may run")
    async def workflows(api: State) -> list[WorkflowOut]:
        return [
            WorkflowOut(
                name=w.name,
                module=w.module,
                inputs=sorted(w.workflow.inputs or ()),
                default_inputs=dict(w.inputs),
                budget_usd=w.budget_usd,
                deadline_s=w.deadline_s,
                models=w.models,
                simulated_models=list(w.simulated),
                subtasks=[
                    WorkflowSubtaskOut(name=s.name, models=list(s.models), after=list(s.after))
                    for s in (w.workflow.subtasks[n] for n in w.workflow.topological_order())
                ],
            )
            for w in api.workflows
        ]

    @router.get(
        "/models",
        response_model=list[ModelOut],
        summary="Models of the registered workflows, with prices and learned success and latency",
    )
    async def models(api: State) -> list[ModelOut]:
        return await known_models(api)

    return router
