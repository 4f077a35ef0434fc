"""Building the pipeline from settings: shared by the agent and `framewire identify`."""

from __future__ import annotations

import logging

from inference_agent.models import (
    BackendOptions,
    ModelRegistry,
    default_manifest_path,
    load_manifests,
)
from inference_agent.pipeline import Pipeline
from inference_agent.settings import InferenceSettings
from inference_agent.stages import Stage, image_stages

logger = logging.getLogger(__name__)


def backend_options(settings: InferenceSettings) -> BackendOptions:
    return BackendOptions(
        backend=settings.model_backend,
        intra_op_threads=settings.onnx_intra_op_threads,
        inter_op_threads=settings.onnx_inter_op_threads,
    )


def build_pipeline(settings: InferenceSettings, *, agent_id: str) -> Pipeline:
    """Image stages, plus the card recogniser when a catalog is configured. Loads and warms
    up the models (raises ModelError or CatalogError with a readable message)."""
    stages: list[Stage] = image_stages(
        thumbnail_size=settings.thumbnail_size, limits=settings.shape_limits()
    )
    registry: ModelRegistry | None = None
    if settings.catalog is None:
        logger.warning("no catalog configured (FRAMEWIRE_CATALOG): card recognition is off")
    else:
        from inference_agent.cards.catalog import CatalogSource
        from inference_agent.cards.matcher import CardMatcher
        from inference_agent.cards.ocr import CardOcr
        from inference_agent.cards.recognizer import RecognizeCard

        catalog = CatalogSource(settings.catalog)
        manifests = load_manifests(settings.model_manifest or default_manifest_path())
        registry = ModelRegistry(manifests, backend_options(settings))
        stages.append(
            RecognizeCard(
                CardOcr(registry),
                catalog,
                CardMatcher(threshold=settings.confidence_threshold),
            )
        )
    return Pipeline(
        stages, agent_id=agent_id, cache_entries=settings.cache_entries, registry=registry
    )
