"""What one brand's admin can learn of another brand: nothing, not even that a version exists or what it sells."""

from __future__ import annotations

from pathlib import Path

from collector.brands import BrandFields, brand_settings, create_brand
from collector.coverage import coverage_report
from collector.knowledge import add_document
from core.db import session_scope
from core.models import AdapterVersion
from core.settings import get_settings
from plugin.api.keys import create_key

SECRET_SHEET = "# Project Nightjar\n\nThe NightjarDrone launches in May; price $999.\n"
SHARED_SHEET = "# Returns\n\nA SuperWidget can be returned within 30 days.\n"


def two_brands(store_url: str, tmp_path: Path) -> None:
    """The default brand and "acme", each with a document (acme's private), and an adapter version of acme's."""
    secret, shared = tmp_path / "nightjar.md", tmp_path / "returns.md"
    secret.write_text(SECRET_SHEET)
    shared.write_text(SHARED_SHEET)
    with session_scope(store_url) as session:
        acme = create_brand(session, "acme", BrandFields(company_name="Acme"), settings=get_settings())
        add_document(session, secret, brand="acme", products=["NightjarDrone"], settings=get_settings())
        add_document(session, shared, products=["SuperWidget"], settings=get_settings())
        session.add(AdapterVersion(brand_id=acme.id, version="v0007-acmeacme", path="/nowhere", base_model="b", rank=8))


def test_another_brands_version_answers_exactly_as_an_unknown_one(store_url: str, tmp_path: Path, start_service) -> None:
    two_brands(store_url, tmp_path)
    service = start_service()
    with session_scope(store_url) as session:
        _, key = create_key(session, "admin", "default-admin", brands=["default"])
    client = service.client()
    client.headers["Authorization"] = f"Bearer {key}"
    theirs = client.post("/admin/adapters/v0007-acmeacme/promote", json={})
    unknown = client.post("/admin/adapters/v0009-nothere0/promote", json={})
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["detail"].replace("v0007-acmeacme", "V") == unknown.json()["detail"].replace(
        "v0009-nothere0", "V")


def test_the_coverage_report_counts_only_the_brands_own_and_shared_knowledge(store_url: str, tmp_path: Path) -> None:
    two_brands(store_url, tmp_path)
    with session_scope(store_url) as session:
        default = coverage_report(session, settings=brand_settings(get_settings(), session, "default"))
        acme = coverage_report(session, settings=brand_settings(get_settings(), session, "acme"))
    assert default.product_names == ["SuperWidget"] and (default.documents, default.passages) == (1, 1)
    assert sorted(acme.product_names) == ["NightjarDrone", "SuperWidget"] and acme.documents == 2
