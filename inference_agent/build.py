"""Building the pipeline from settings: shared by the agent and `framewire identify`."""

from __future__ import annotations

import logging

from framewire.inference_agent.models import (
    BackendOptions,
    ModelRegistry,
    default_manifest_path,
    load_manifests,
)
from framewire.inference_agent.pipeline import Pipeline
from framewire.inference_agent.settings import InferenceSettings
from framewire.inference_agent.stages import Stage, StageOptions, make_stages

logger = logging.getLogger(__name__)


def backend_options(settings: InferenceSettings) -> BackendOptions:
    return BackendOptions(
        backend=settings.model_backend,
        intra_op_threads=settings.onnx_intra_op_threads,
        inter_op_threads=settings.onnx_inter_op_threads,
        intra_op_spinning=settings.onnx_intra_op_spinning,
    )


class _Recogniser:
    """Builds the card stage when the stages name it, keeping the model registry it loads."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.registry: ModelRegistry | None = None

    def __call__(self) -> Stage:
        from framewire.inference_agent.cards.catalog import CatalogSource
        from framewire.inference_agent.cards.matcher import CardMatcher
        from framewire.inference_agent.cards.ocr import CardOcr
        from framewire.inference_agent.cards.recognizer import RecognizeCard

        settings = self.settings
        assert settings.catalog is not None  # the settings refuse a card stage without one
        catalog = CatalogSource(settings.catalog)
        manifests = load_manifests(settings.model_manifest or default_manifest_path())
        self.registry = ModelRegistry(manifests, backend_options(settings))
        return RecognizeCard(
            CardOcr(self.registry),
            catalog,
            CardMatcher(threshold=settings.confidence_threshold),
        )


def build_pipeline(settings: InferenceSettings, *, agent_id: str) -> Pipeline:
    """The stages the settings name (default: the image stages, plus the card recogniser
    when a catalog is configured). Loads and warms up the models when the card stage runs
    (raises ModelError or CatalogError with a readable message)."""
    names = settings.stage_names()
    if settings.catalog is None:
        if settings.stages is None:
            logger.warning("no catalog configured (FRAMEWIRE_CATALOG): card recognition is off")
    elif "card" not in names:
        logger.warning("a catalog is configured but the stages leave out card: it is not used")
    recogniser = _Recogniser(settings) if settings.catalog is not None else None
    options = StageOptions(
        thumbnail_size=settings.thumbnail_size,
        limits=settings.shape_limits(),
        recogniser=recogniser,
    )
    stages = make_stages(names, options)
    logger.info("stages: %s", ", ".join(names))
    return Pipeline(
        stages,
        agent_id=agent_id,
        cache_entries=settings.cache_entries,
        registry=recogniser.registry if recogniser else None,
    )
