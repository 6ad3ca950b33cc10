"""The rollback guard: a version that makes agents correct more is rolled back, within the rules that bound it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from collector.stats import BASE_LABEL, VersionStats
from core.db import session_scope
from core.models import DEFAULT_BRAND_ID, AdapterEvent, AdapterStatus, Brand
from core.registry import live_adapter, previous_live, register_adapter, set_status
from core.settings import get_settings
from plugin.loop.rollback import RegressionCheck, check_live_regression, correction_rate_regressed
from plugin.loop.scheduler import LoopScheduler
from serving.gateway import ServingGateway
from tests.fixtures.stores import replay_reviews
from tests.fixtures.vllm import register_adapter_folder


def stats(version: str, approved: int, corrected: int) -> VersionStats:
    return VersionStats(version=version, reviews=approved + corrected, approved=approved, edited=corrected,
                        rejected=0, mean_edit_distance=0.0)


@pytest.mark.parametrize(
    ("old", "new", "margin", "alpha", "min_reviews", "regressed", "z", "p"),
    [
        # 10% -> 14% of 50 each is worse, but by less than the 5% margin: no rollback, decided by the z-test (both
        # have the 30 reviews). z by hand: pooled 12/100, spread sqrt(.12*.88*(2/50)) = .06499,
        # z = (.14 - .10 - .05) / .06499 = -0.1539, p = 1 - Phi(z)
        ((45, 5), (43, 7), 0.05, 0.05, 30, False, -0.1539, 0.5611),
        # 10% -> 60%: far beyond the margin. z by hand: pooled 35/100, spread sqrt(.35*.65*(1/50+1/50)) = .09539,
        # z = (.6 - .1 - .05) / .09539 = 4.7173, p = 1 - Phi(z)
        ((45, 5), (20, 30), 0.05, 0.05, 30, True, 4.7173, 1.195e-06),
        # the same counts under a margin of 0.6 are not "worse by more than the margin"
        ((45, 5), (20, 30), 0.6, 0.05, 30, False, -1.0483, 0.8527),
        # 10% -> 25% of 100 each: pooled .175, z = (.15 - .05) / .05374 = 1.8610, p = .0314; alpha .01 keeps it...
        ((90, 10), (75, 25), 0.05, 0.01, 30, False, 1.8610, 0.03137),
        # ...and alpha .05 acts on it
        ((90, 10), (75, 25), 0.05, 0.05, 30, True, 1.8610, 0.03137),
        # below the minimum number of reviews nothing is decided, however bad it looks
        ((10, 0), (0, 10), 0.05, 0.05, 30, False, 0.0, 1.0),
    ],
)
def test_the_z_test_rejects_only_a_significant_regression_beyond_the_margin(
    old, new, margin, alpha, min_reviews, regressed, z, p
) -> None:
    """Catches `z = (p_new - p_old - margin)` -> `+ margin` or without the margin, and `p_value < alpha` -> `>`;
    every case but the last has the minimum reviews, so the z-test (not the review guard) decides it."""
    test = correction_rate_regressed(stats("v1", *old), stats("v2", *new), margin=margin, alpha=alpha,
                                     min_reviews=min_reviews)
    assert test.regressed is regressed
    assert test.enough_reviews is (min(sum(old), sum(new)) >= min_reviews)
    if z is not None:
        assert test.z == pytest.approx(z, abs=1e-4) and test.p_value == pytest.approx(p, rel=1e-3)
    if test.enough_reviews:
        assert f"z={test.z:.2f}" in test.reason and f"p={test.p_value:.3f}" in test.reason


@pytest.mark.parametrize(
    ("previous", "regressed", "roll_back"),
    [
        ("v1", True, True),
        ("v1", False, False),
        (BASE_LABEL, True, False),  # a first adapter is never rolled back to the bare base model
        (BASE_LABEL, False, False),
    ],
)
def test_the_guard_acts_on_a_regression_but_never_back_to_the_bare_base(previous, regressed, roll_back) -> None:
    test = correction_rate_regressed(stats(previous, 45, 5), stats("v2", 0, 50) if regressed else stats("v2", 45, 5))
    assert RegressionCheck(live="v2", previous=previous, test=test).roll_back is roll_back


@pytest.mark.vllm
def test_a_version_that_makes_agents_correct_more_is_rolled_back_automatically(
    serving_settings, lora_adapters, vllm_server
) -> None:
    url = serving_settings.resolved_database_url
    first = register_adapter_folder(lora_adapters["other"], vllm_server.base_model)
    second = register_adapter_folder(lora_adapters["retrained"], vllm_server.base_model)

    async def scenario() -> None:
        gateway = ServingGateway(get_settings())
        await gateway.start()
        try:
            await gateway.promote(first, actor="test")
            replay_reviews(url, first, approved=45, edited=5)
            await gateway.promote(second, actor="test")
            scheduler = LoopScheduler(get_settings(), gateway)
            replay_reviews(url, second, approved=43, edited=7)
            # 14% vs 10% of 50 reviews each: enough reviews for a verdict, and not worse by more than the 5% margin
            assert check_live_regression(get_settings()).test.enough_reviews
            await scheduler.guard_live_version()
            assert gateway.status().live == second
            replay_reviews(url, second, approved=0, edited=30)  # 37 of 80 corrected: 46%
            await scheduler.guard_live_version()
            assert gateway.status().live == first
        finally:
            await gateway.stop()

    asyncio.run(scenario())
    with session_scope(url) as session:
        assert live_adapter(session).version == first
        rollback = session.execute(
            select(AdapterEvent).where(AdapterEvent.action == "rollback").order_by(AdapterEvent.id.desc())
        ).scalars().first()
    assert rollback.actor == "auto-rollback" and "z=" in rollback.reason and second in rollback.reason
    assert check_live_regression(get_settings()) is None  # a rollback is never undone automatically


@pytest.mark.parametrize(
    ("events", "current", "previous"),
    [
        ([], None, None),  # nothing ever went live: the base model served alone
        ([("v1", "promote")], "v1", None),  # a first adapter replaced the base model
        ([("v1", "promote"), ("v2", "promote")], "v2", "v1"),
        ([("v1", "promote"), ("v2", "promote")], None, "v2"),  # none live now: the last one that was
        ([("v1", "promote"), ("v2", "promote"), ("v1", "rollback")], "v1", "v2"),  # back again: the one rolled back
        ([("v1", "promote"), ("v2", "canary"), ("v2", "canary-end"), ("v3", "promote")], "v3", "v1"),  # canaries never
        ([("v1", "promote"), ("v2", "register"), ("v2", "reject"), ("v3", "promote")], "v3", "v1"),  # were live
        ([("v1", "promote"), ("other", "promote"), ("v3", "promote")], "v3", "v1"),  # another brand's lineage
    ],
)
def test_the_version_live_before_is_the_newest_other_one_that_went_live_in_the_brand(
    store_url: str, events: list[tuple[str, str]], current: str | None, previous: str | None
) -> None:
    with session_scope(store_url) as session:
        other = Brand(slug="other-brand", company_name="Other", system_prompt="Hi.", public_model_name="other-a")
        session.add(other)
        session.flush()
        for version in ("v1", "v2", "v3", "other"):
            register_adapter(session, version=version, path=f"/adapters/{version}", base_model="base", rank=8,
                             brand_id=other.id if version == "other" else DEFAULT_BRAND_ID)
        for version, action in events:
            session.add(AdapterEvent(version=version, action=action, actor="test"))
            session.flush()
        assert previous_live(session, current) == previous


def test_regression_check_needs_enough_reviews_before_any_verdict(store_url: str) -> None:
    with session_scope(store_url) as session:
        for version in ("v1", "v2"):
            register_adapter(session, version=version, path=f"/adapters/{version}", base_model="base", rank=8)
        set_status(session, "v1", AdapterStatus.LIVE, action="promote")
        set_status(session, "v1", AdapterStatus.RETIRED, action="retire")
        set_status(session, "v2", AdapterStatus.LIVE, action="promote")
    replay_reviews(store_url, "v1", approved=10, edited=0)
    replay_reviews(store_url, "v2", approved=0, edited=10)
    check = check_live_regression(get_settings())
    assert check.previous == "v1" and not check.test.regressed and not check.test.enough_reviews
