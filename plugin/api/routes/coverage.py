"""The coverage report for admins: which products and intents the live version was trained on, and its gaps."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from collector.coverage import CoverageReport, live_coverage
from plugin.api.brand_scope import ChosenBrand
from plugin.api.deps import AdminCaller, StoreDep

router = APIRouter(prefix="/admin", tags=["admin"])


class CoverageOut(BaseModel):
    live_version: str = Field(description="The version the report stands for (\"base\" while no adapter is live).")
    run_id: int | None = Field(description="The refresh run that recorded it beside its gate; null: computed from "
                               "the store by the export's split rule (no refresh trained the live version).")
    routing: bool = Field(description="Whether auto mode hands messages on the gaps' topics to an agent.")
    report: CoverageReport


@router.get("/coverage", response_model=CoverageOut, summary="Products and intents per split, correction rates, gaps")
def get_coverage(_: AdminCaller, brand: ChosenBrand, store: StoreDep) -> CoverageOut:
    """The brand's (?brand=) report auto-mode routing judges by, with the current HOUSESTYLE_COVERAGE_* thresholds
    applied."""
    settings = brand.settings
    with store.session() as session:
        found = live_coverage(settings, session)
    return CoverageOut(live_version=found.live_version, run_id=found.run_id, routing=settings.coverage_routing,
                       report=found.report)
