"""Every decision the loop makes, pinned exactly at its threshold and one step past it.

Each test names, in its docstring, the one-line change to the product code it catches; `tests/mutations.py` makes
those changes one at a time in a copy of the repository and checks that the test named fails.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from collector.pii.erasure import forget, purge_expired_raw
from collector.stats import VersionStats
from core.db import session_scope
from core.errors import InputError, NotFoundError
from core.models import ApiKeyRole, Conversation, utcnow
from core.settings import Settings, get_settings
from plugin.api.brand_scope import BrandEntry, brand_filter, pick_brand, visible_brands
from plugin.api.deps import Caller
from plugin.loop.decision import GatewaySwapper, apply_decision
from plugin.loop.gate import MIN_EDIT_DISTANCE_GAIN, choose_method
from plugin.loop.rollback import correction_rate_regressed
from serving.routing import LoadedVersion, RoutingTable, canary_bucket
from tests.fixtures.stores import redact_store
from tests.test_method_choice import candidate
from tests.test_privacy_store import exchange, texts

# --- rollback: the minimum number of reviews ----------------------------------------------------------------------


def stats(version: str, approved: int, corrected: int) -> VersionStats:
    return VersionStats(version=version, reviews=approved + corrected, approved=approved, edited=corrected,
                        rejected=0, mean_edit_distance=0.0)


@pytest.mark.parametrize(
    ("old", "new", "enough", "regressed"),
    [
        ((27, 3), (0, 30), True, True),  # exactly 30 reviews each: a verdict, and a clear regression
        ((26, 3), (0, 30), False, False),  # one review short on the old side: no verdict
        ((27, 3), (0, 29), False, False),  # one review short on the new side: no verdict
    ],
)
def test_the_rollback_decides_at_exactly_the_minimum_reviews_and_not_one_below(old, new, enough, regressed) -> None:
    """Catches `old.reviews >= min_reviews` -> `>` (or `new.reviews >= ...` -> `>`) in plugin/loop/rollback.py, and
    `and` -> `or` between the two."""
    test = correction_rate_regressed(stats("v1", *old), stats("v2", *new), min_reviews=30)
    assert (test.enough_reviews, test.regressed) == (enough, regressed), test.reason


# --- the method choice: the preference candidate's margin over SFT ------------------------------------------------


def test_the_preference_method_margin_is_one_hundredth_of_edit_distance() -> None:
    """Catches MIN_EDIT_DISTANCE_GAIN = 0.01 -> 0.05 (or anything outside 0.005..0.015) in plugin/loop/gate.py."""
    assert MIN_EDIT_DISTANCE_GAIN == pytest.approx(0.01)
    # 0.015 below SFT: beyond a 0.01 margin, so DPO wins; a 0.05 (or 0.02) margin would keep SFT
    assert choose_method([candidate("sft", 0.40), candidate("dpo", 0.385)]).winner.method == "dpo"
    # 0.005 below SFT: within the margin, so SFT stays; a 0.005 margin or less would let DPO win
    assert choose_method([candidate("sft", 0.40), candidate("dpo", 0.395)]).winner.method == "sft"


@pytest.mark.parametrize(("distance", "winner"), [(0.5, "dpo"), (0.5000001, "sft")])
def test_a_preference_candidate_exactly_the_margin_below_sft_wins(distance: float, winner: str) -> None:
    """Catches `distance > best_sft - min_edit_gain` -> `>=` in choose_method (exactly the margin is enough)."""
    choice = choose_method([candidate("sft", 0.75), candidate("dpo", distance)], min_edit_gain=0.25)
    assert choice.winner.method == winner, choice.reason


@pytest.mark.parametrize(("golden", "winner"), [(48.0, "dpo"), (47.9, "sft")])
def test_the_method_choice_golden_tolerance_holds_exactly_at_the_tolerance(golden: float, winner: str) -> None:
    """Catches `candidate.golden_chrf < sft.golden_chrf - golden_tolerance` -> `<=` (48.0 would lose)
    or `+ golden_tolerance` (47.9 would still lose, 48.0 too) in choose_method."""
    choice = choose_method([candidate("sft", 0.40, golden=50), candidate("dpo", 0.20, golden=golden)],
                           golden_tolerance=2.0)
    assert choice.winner.method == winner, choice.reason


def test_ties_go_to_the_higher_preference_accuracy_then_to_sft() -> None:
    """Catches `-c.preference.preference_accuracy` -> `c.preference...` and `c is not sft` -> `c is sft` in the
    ranking of choose_method."""
    assert choose_method([candidate("sft", 0.40), candidate("dpo", 0.30, 0.6),
                          candidate("kto", 0.30, 0.9)]).winner.method == "kto"
    sft, dpo = candidate("sft", 0.40, 0.5), candidate("dpo", 0.40, 0.5)
    assert choose_method([sft, dpo], min_edit_gain=0.0).winner.method == "sft"


# --- applying a verdict: promote, or a canary at the share --------------------------------------------------------


class RecordingGateway:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def promote(self, version: str, *, actor: str, reason: str) -> None:
        self.calls.append(("promote", version, actor))

    async def canary(self, version: str, share: float, *, actor: str, reason: str) -> None:
        self.calls.append(("canary", version, share, actor))


@pytest.mark.parametrize(("share", "expected"), [
    (0.0, ("promote", "v9", "refresh")),
    (0.25, ("canary", "v9", 0.25, "refresh")),
])
def test_a_refresh_verdict_goes_through_the_gateway_as_a_promotion_or_a_canary_at_its_share(share, expected) -> None:
    """Catches `canary_share > 0` -> `>= 0` in apply_decision and `self.gateway.canary(version, share, ...)` -> a
    fixed share in GatewaySwapper (plugin/loop/decision.py): the swapper is driven from a worker thread, as a refresh
    does, onto the service's loop."""
    gateway = RecordingGateway()

    async def scenario() -> None:
        swapper = GatewaySwapper(gateway, asyncio.get_running_loop())
        applied = await asyncio.to_thread(apply_decision, swapper, "v9", canary_share=share, actor="refresh",
                                          reason="gate passed")
        assert (applied.action, applied.share) == (expected[0], share if share > 0 else 1.0)

    asyncio.run(scenario())
    assert gateway.calls == [expected]


# --- the canary split ---------------------------------------------------------------------------------------------


def canary_table(share: float) -> RoutingTable:
    table = RoutingTable("gadgetcorp-assistant", "base")
    table.live = LoadedVersion(version="live", vllm_name="live-1", path="/a/live")
    table.canary = LoadedVersion(version="canary", vllm_name="canary-1", path="/a/canary")
    table.canary_share = share
    return table


def test_the_canary_serves_its_share_of_conversations_and_each_stays_on_its_side() -> None:
    """Catches `bucket < self.canary_share` -> `bucket > self.canary_share` (the complement: 70% instead of 30%) and a
    bucket that is not stable per conversation (e.g. `random.random()` for every request) in serving/routing.py."""
    table = canary_table(0.3)
    keys = [f"conversation-{n}" for n in range(4000)]
    first = {key: table.resolve(key).version for key in keys}
    assert {key: table.resolve(key).version for key in keys} == first
    share = sum(version == "canary" for version in first.values()) / len(keys)
    assert 0.27 < share < 0.33, share
    assert all(table.resolve(key).canary == (canary_bucket(key) < 0.3) for key in keys[:200])


def test_a_conversation_exactly_at_the_share_stays_on_the_live_version() -> None:
    """Catches `bucket < self.canary_share` -> `<=` in RoutingTable.resolve: the split is [0, share) for the canary."""
    key = "conversation-7"
    bucket = canary_bucket(key)
    assert canary_table(bucket).resolve(key).version == "live"
    assert canary_table(bucket + 1e-9).resolve(key).version == "canary"


@pytest.mark.parametrize(("share", "version"), [(0.0, "live"), (1.0, "canary")])
def test_share_zero_never_and_share_one_always_routes_to_the_canary(share: float, version: str) -> None:
    """Catches `self.canary_share > 0` -> `>= 0` together with `<` -> `<=`, and the canary ignored (`if False`)."""
    table = canary_table(share)
    assert {table.resolve(f"c{n}").version for n in range(500)} == {version}


def test_canary_buckets_are_uniform_over_zero_to_one() -> None:
    """Catches `digest[:8]` read against the wrong scale (`/ 2**63`: half the buckets at 1 or more)."""
    buckets = [canary_bucket(f"k{n}") for n in range(2000)]
    assert all(0 <= b < 1 for b in buckets) and 0.45 < sum(buckets) / len(buckets) < 0.55


# --- brand scope --------------------------------------------------------------------------------------------------


def brand_entries() -> dict[int, BrandEntry]:
    settings = Settings()
    return {1: BrandEntry(1, "default", settings), 2: BrandEntry(2, "business", settings),
            3: BrandEntry(3, "acme", settings)}


def caller(brands: tuple[int, ...] | None) -> Caller:
    return Caller(name="k", role=ApiKeyRole.AGENT, key_id=7, brands=brands)


@pytest.mark.parametrize(
    ("brands", "slug", "expected"),
    [
        (None, None, "default"),  # a key of every brand, no brand named: the default brand
        ((2,), None, "business"),  # a key of one brand: that brand
        ((2,), "business", "business"),
        ((2,), "default", NotFoundError),  # a brand the key may not act on is missing to it
        ((2,), "acme", NotFoundError),
        (None, "acme", "acme"),
        (None, "nobody", NotFoundError),
        ((2, 3), None, InputError),  # several: name one
        ((2, 3), "acme", "acme"),
    ],
)
def test_a_key_acts_only_on_its_brands_and_others_look_missing(brands, slug, expected) -> None:
    """Catches `entry is None or not caller.may_act_on(entry.id)` -> `entry is None` in pick_brand,
    `self.brands is None or brand_id in self.brands` -> `and` in Caller.may_act_on, `len(caller.brands) == 1` -> `>= 1`,
    and the default brand for a key of every brand swapped for the key's first brand."""
    if isinstance(expected, type):
        with pytest.raises(expected):
            pick_brand(brand_entries(), caller(brands), slug)
    else:
        assert pick_brand(brand_entries(), caller(brands), slug).slug == expected


@pytest.mark.parametrize(("brands", "visible", "filtered"), [
    (None, ["default", "business", "acme"], None),
    ((3,), ["acme"], [3]),
    ((1, 3), ["default", "acme"], [1, 3]),
])
def test_lists_show_only_the_keys_brands(brands, visible, filtered) -> None:
    """Catches `if caller.may_act_on(brand_id)` dropped in visible_brands and `None if caller.brands is None else
    list(caller.brands)` -> `None` in brand_filter (plugin/api/brand_scope.py)."""
    entries = brand_entries()

    class Directory:
        async def entries(self, wanted: object = None) -> dict[int, BrandEntry]:
            return entries

    assert [entry.slug for entry in visible_brands(entries, caller(brands))] == visible
    assert asyncio.run(brand_filter(Directory(), caller(brands), None)) == filtered
    if brands is not None:
        with pytest.raises(NotFoundError):
            asyncio.run(brand_filter(Directory(), caller(brands), "business"))


# --- retention: days, exactly ------------------------------------------------------------------------------------


def test_raw_text_is_purged_a_day_past_the_retention_period_and_kept_a_day_before_it(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches `timedelta(days=settings.raw_retention_days)` -> `timedelta(hours=...)` and `created_at < cutoff` ->
    `>` in purge_expired_raw (collector/pii/erasure.py)."""
    kept = exchange(store_url, [("i'm dana at dana.k@example.com", "Hi Dana, got it.")])
    purged = exchange(store_url, [("i'm eli at eli@example.com", "Hi Eli, got it.")])
    redact_store(store_url)
    with session_scope(store_url) as session:
        for conversation, age in ((kept, timedelta(days=29)), (purged, timedelta(days=31))):
            session.execute(update(Conversation).where(Conversation.id == conversation).values(
                created_at=utcnow() - age))
    monkeypatch.setenv("HOUSESTYLE_RAW_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    assert purge_expired_raw(store_url, get_settings(), actor="test") == 1
    assert texts(store_url, kept)[0][0] == "i'm dana at dana.k@example.com"
    assert texts(store_url, purged)[0][0] == "i'm <PERSON_1> at <EMAIL_1>"


def test_no_retention_period_purges_nothing(store_url: str) -> None:
    """Catches `if settings.raw_retention_days is None: return 0` dropped (a crash), or a default period assumed."""
    assert purge_expired_raw(store_url, Settings(raw_retention_days=None), actor="test") == 0



def test_erasure_by_phone_needs_seven_digits_exactly(store_url: str) -> None:
    """Catches `if len(wanted) < 7` -> `< 6` (a six-digit fragment would erase whoever's number holds it) or `< 8` in
    matching_conversations (collector/pii/erasure.py)."""
    with pytest.raises(InputError, match="fewer than 7 digits"):
        forget(store_url, actor="dpo", phone="555-013")
    try:  # seven digits pass the count (whether they make a number in the region is the next check)
        forget(store_url, actor="dpo", phone="555-0134", dry_run=True)
    except InputError as refused:
        assert "fewer than 7 digits" not in str(refused)


# --- redaction thresholds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "found"), [
    ("the parcel was signed for by Summer Jones at the door", ["Summer Jones"]),  # "summer": Zipf 5.23, under 5.3
    ("the parcel was signed for by Frank Miller at the door", ["Frank Miller"]),  # "frank": 4.75
    ("the parcel was signed for by Hope Jones at the door", []),  # "hope": 5.44, an everyday word first
])
def test_a_first_name_that_is_also_a_word_opens_a_full_name_only_below_zipf_5_3(text: str, found: list[str]) -> None:
    """Catches `not lexicon.is_common_word(first, 5.3)` -> 4.3 (Summer and Frank Jones/Miller kept in clear) or -> 5.5
    (every "Hope Street"-like pair redacted) in NameRecognizer's first-name + surname rule
    (collector/pii/recognizers/names.py)."""
    from collector.pii.recognizers.names import NameRecognizer

    assert [text[start:end] for start, end, _, _ in NameRecognizer().find(text, None)] == found
