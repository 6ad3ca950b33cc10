"""A mutation run you can repeat: one-line changes to the loop's decision modules, each run against the tests that
should catch it. Not part of the default `pytest` run (pytest collects test_*.py only).

    .venv/bin/python tests/mutations.py            # every mutation; exit 1 if any survives
    .venv/bin/python tests/mutations.py -k rollback  # those whose id contains "rollback"
    .venv/bin/python tests/mutations.py --list

The repository is copied once to a temporary folder (without .venv, .git and caches); each change is made there,
the listed tests run there (`python -m pytest` of this repository's interpreter, cwd and PYTHONPATH at the copy),
and the file is restored before the next change. The checkout itself is never modified. A baseline run first checks
that every listed test passes unchanged, so a "killed" always means the change made it fail.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKS = "not vllm and not browser and not postgres"
IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis",
                                ".mypy_cache", "test-artifacts", "*.pyc")

DB = "tests/test_decision_boundaries.py"
SCHED = "tests/test_loop_scheduler.py"
ACCESS = "tests/test_plugin_access.py"
CLUSTER = "tests/test_cluster_jobs.py"
FP = "tests/test_fingerprint.py"
SHARED = "tests/test_shared_replicas.py"
AS = "tests/test_adapter_store.py"


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids that should fail with the change
    marks: str = MARKS  # the marker expression they run under (Postgres tests start a throwaway cluster)


MUTATIONS: list[Mutation] = [
    # --- the gate ---------------------------------------------------------------------------------------------------
    Mutation("gate-chrf-gain-inclusive", "plugin/loop/gate.py",
             "if candidate.chrf < live.chrf + rules.min_chrf_gain:",
             "if candidate.chrf <= live.chrf + rules.min_chrf_gain:",
             ("tests/test_loop_gate.py::test_each_gate_rule_holds_on_its_own",)),
    Mutation("gate-loss-gain-inclusive", "plugin/loop/gate.py",
             "if candidate.loss > live.loss - rules.min_loss_gain:",
             "if candidate.loss >= live.loss - rules.min_loss_gain:",
             ("tests/test_loop_gate.py::test_each_gate_rule_holds_on_its_own",)),
    Mutation("gate-golden-tolerance-inclusive", "plugin/loop/gate.py",
             "if candidate.golden_chrf < live.golden_chrf - rules.golden_tolerance:",
             "if candidate.golden_chrf <= live.golden_chrf - rules.golden_tolerance:",
             ("tests/test_loop_gate.py::test_each_gate_rule_holds_on_its_own",)),
    Mutation("gate-golden-tolerance-sign", "plugin/loop/gate.py",
             "if candidate.golden_chrf < live.golden_chrf - rules.golden_tolerance:",
             "if candidate.golden_chrf < live.golden_chrf + rules.golden_tolerance:",
             ("tests/test_loop_gate.py::test_each_gate_rule_holds_on_its_own",)),
    # --- the method choice ------------------------------------------------------------------------------------------
    Mutation("method-margin-0.05", "plugin/loop/gate.py",
             "MIN_EDIT_DISTANCE_GAIN = 0.01", "MIN_EDIT_DISTANCE_GAIN = 0.05",
             (f"{DB}::test_the_preference_method_margin_is_one_hundredth_of_edit_distance",)),
    Mutation("method-margin-0.005", "plugin/loop/gate.py",
             "MIN_EDIT_DISTANCE_GAIN = 0.01", "MIN_EDIT_DISTANCE_GAIN = 0.005",
             (f"{DB}::test_the_preference_method_margin_is_one_hundredth_of_edit_distance",)),
    Mutation("method-margin-inclusive", "plugin/loop/gate.py",
             "if distance > best_sft - min_edit_gain:", "if distance >= best_sft - min_edit_gain:",
             (f"{DB}::test_a_preference_candidate_exactly_the_margin_below_sft_wins",)),
    Mutation("method-golden-inclusive", "plugin/loop/gate.py",
             "and candidate.golden_chrf < sft.golden_chrf - golden_tolerance):",
             "and candidate.golden_chrf <= sft.golden_chrf - golden_tolerance):",
             (f"{DB}::test_the_method_choice_golden_tolerance_holds_exactly_at_the_tolerance",)),
    Mutation("method-tie-accuracy-sign", "plugin/loop/gate.py",
             "-c.preference.preference_accuracy,", "c.preference.preference_accuracy,",
             (f"{DB}::test_ties_go_to_the_higher_preference_accuracy_then_to_sft",)),
    Mutation("method-tie-prefers-sft", "plugin/loop/gate.py",
             "c is not sft))", "c is sft))",
             (f"{DB}::test_ties_go_to_the_higher_preference_accuracy_then_to_sft",)),
    Mutation("method-golden-tolerance-not-passed", "plugin/loop/methods.py",
             "choose_method(scored, golden_tolerance=settings.gate_golden_tolerance)", "choose_method(scored)",
             ("tests/test_method_choice.py::test_the_refresh_chooses_the_method_within_the_brands_golden_set_tolerance",)),
    Mutation("method-kto-without-its-export", "plugin/loop/methods.py",
             'if method == "kto":', 'if method == "never":',
             ("tests/test_preference_training.py::test_refresh_second_candidate_is_trained_and_the_method_chosen",)),
    # --- the rollback -----------------------------------------------------------------------------------------------
    Mutation("rollback-min-reviews-old-strict", "plugin/loop/rollback.py",
             "enough = old.reviews >= min_reviews", "enough = old.reviews > min_reviews",
             (f"{DB}::test_the_rollback_decides_at_exactly_the_minimum_reviews_and_not_one_below",)),
    Mutation("rollback-min-reviews-new-strict", "plugin/loop/rollback.py",
             "and new.reviews >= min_reviews", "and new.reviews > min_reviews",
             (f"{DB}::test_the_rollback_decides_at_exactly_the_minimum_reviews_and_not_one_below",)),
    Mutation("rollback-min-reviews-either", "plugin/loop/rollback.py",
             "enough = old.reviews >= min_reviews and", "enough = old.reviews >= min_reviews or",
             (f"{DB}::test_the_rollback_decides_at_exactly_the_minimum_reviews_and_not_one_below",)),
    Mutation("rollback-margin-sign", "plugin/loop/rollback.py",
             "z = (p_new - p_old - margin) / spread", "z = (p_new - p_old + margin) / spread",
             ("tests/test_loop_rollback.py::test_the_z_test_rejects_only_a_significant_regression_beyond_the_margin",)),
    Mutation("rollback-margin-ignored", "plugin/loop/rollback.py",
             "z = (p_new - p_old - margin) / spread", "z = (p_new - p_old) / spread",
             ("tests/test_loop_rollback.py::test_the_z_test_rejects_only_a_significant_regression_beyond_the_margin",)),
    Mutation("rollback-alpha-direction", "plugin/loop/rollback.py",
             "regressed = p_value < alpha", "regressed = p_value > alpha",
             ("tests/test_loop_rollback.py::test_the_z_test_rejects_only_a_significant_regression_beyond_the_margin",)),
    Mutation("rollback-to-bare-base", "plugin/loop/rollback.py",
             "return self.test.regressed and self.previous != BASE_LABEL", "return self.test.regressed",
             ("tests/test_loop_rollback.py::test_the_guard_acts_on_a_regression_but_never_back_to_the_bare_base",)),
    Mutation("rollback-other-brands-lineage", "plugin/loop/rollback.py",
             "previous = previous_live(session, live.version, brand) or BASE_LABEL",
             "previous = previous_live(session, live.version) or BASE_LABEL",
             (f"{SCHED}::test_a_business_brand_regression_rolls_back_to_its_own_previous_version_never_the_default_brands",)),
    Mutation("rollback-undoes-a-rollback", "plugin/loop/rollback.py",
             'if made_live is None or made_live.action == "rollback":', "if made_live is None:",
             (f"{SCHED}::test_a_business_brand_regression_rolls_back_to_its_own_previous_version_never_the_default_brands",)),
    Mutation("guard-acts-without-regression", "plugin/loop/scheduler.py",
             "if check is None or not check.roll_back:", "if check is None:",
             (f"{SCHED}::test_a_business_brand_regression_rolls_back_to_its_own_previous_version_never_the_default_brands",)),
    Mutation("guard-rolls-back-default-brand", "plugin/loop/scheduler.py",
             "                                    brand_id=brand_key)",
             "                                    brand_id=DEFAULT_BRAND_ID)",
             (f"{SCHED}::test_a_business_brand_regression_rolls_back_to_its_own_previous_version_never_the_default_brands",)),
    # --- the refresh triggers and the scheduler ---------------------------------------------------------------------
    Mutation("trigger-interval-strict", "plugin/loop/scheduler.py",
             "if interval and minutes_since_last >= interval:", "if interval and minutes_since_last > interval:",
             ("tests/test_loop_triggers.py::test_a_refresh_is_due_after_the_interval_or_enough_new_reviews",)),
    Mutation("trigger-reviews-strict", "plugin/loop/scheduler.py",
             "if threshold and (count := new_reviews()) >= threshold:",
             "if threshold and (count := new_reviews()) > threshold:",
             ("tests/test_loop_triggers.py::test_a_refresh_is_due_after_the_interval_or_enough_new_reviews",)),
    Mutation("scheduler-seconds-as-hours", "plugin/loop/scheduler.py",
             "return min(ago) if ago else (self.clock() - self.started_at) / 60",
             "return min(ago) if ago else (self.clock() - self.started_at) / 3600",
             (f"{SCHED}::test_only_the_due_brand_starts_and_the_interval_is_minutes_59_no_61_yes",)),
    Mutation("scheduler-seconds-as-half-minutes", "plugin/loop/scheduler.py",
             "ago.append((self.clock() - own) / 60)", "ago.append((self.clock() - own) / 30)",
             (f"{SCHED}::test_only_the_due_brand_starts_and_the_interval_is_minutes_59_no_61_yes",)),
    Mutation("scheduler-one-clock-for-all-brands", "plugin/loop/scheduler.py",
             "if (own := self.last_refresh.get(brand.brand)) is not None:",
             "if (own := self.last_refresh.get('default')) is not None:",
             (f"{SCHED}::test_only_the_due_brand_starts_and_the_interval_is_minutes_59_no_61_yes",)),
    Mutation("scheduler-takeover-ignores-the-store", "plugin/loop/scheduler.py",
             'started = as_utc(last_started(session, "refresh", brand_key))', "started = None",
             (f"{CLUSTER}::test_an_instance_that_takes_the_scheduler_over_keeps_the_clusters_interval",)),
    Mutation("scheduler-takeover-age-sign", "plugin/loop/scheduler.py",
             "ago.append((utcnow() - started).total_seconds() / 60)",
             "ago.append((started - utcnow()).total_seconds() / 60)",
             (f"{CLUSTER}::test_an_instance_that_takes_the_scheduler_over_keeps_the_clusters_interval",)),
    Mutation("scheduler-takeover-age-in-hours", "plugin/loop/scheduler.py",
             "ago.append((utcnow() - started).total_seconds() / 60)",
             "ago.append((utcnow() - started).total_seconds() / 3600)",
             (f"{CLUSTER}::test_an_instance_that_takes_the_scheduler_over_keeps_the_clusters_interval",)),
    Mutation("scheduler-latest-refresh-max", "plugin/loop/scheduler.py",
             "return min(ago) if ago else", "return max(ago) if ago else",
             (f"{CLUSTER}::test_an_instance_that_takes_the_scheduler_over_keeps_the_clusters_interval",)),
    Mutation("scheduler-takeover-any-brand", "plugin/loop/scheduler.py",
             'started = as_utc(last_started(session, "refresh", brand_key))',
             'started = as_utc(last_started(session, "refresh"))',
             (f"{CLUSTER}::test_an_instance_that_takes_the_scheduler_over_keeps_the_clusters_interval",)),
    Mutation("scheduler-forgets-last-refresh", "plugin/loop/scheduler.py",
             "            self.last_refresh[settings.brand] = self.clock()", "            self.clock()",
             (f"{SCHED}::test_one_brand_at_a_time_skips_a_second_due_brand_until_the_first_ends",)),
    # --- cluster-wide jobs: leases (tests/test_cluster_jobs.py) ---------------------------------------------------
    Mutation("lease-scheduler-tick-unguarded", "plugin/loop/scheduler.py",
             "        if not await asyncio.to_thread(self.leads):\n            return\n",
             "        if False:\n            return\n",
             (f"{CLUSTER}::test_one_scheduler_ticks_and_another_takes_over_once_the_holders_lease_ran_out",)),
    Mutation("lease-holder-never-renews", "core/locks.py",
             "return renew(name, holder, ttl=ttl, url=url)  # False if taken over meanwhile (we were judged dead)",
             "return True",
             (f"{CLUSTER}::test_one_scheduler_ticks_and_another_takes_over_once_the_holders_lease_ran_out",)),
    Mutation("lease-never-taken-over", "core/locks.py",
             "if why_holder_is_gone(other, expires_at, now=utcnow(), machine=this_machine(), alive=pid_alive) is None:",
             "if True:",
             (f"{CLUSTER}::test_one_scheduler_ticks_and_another_takes_over_once_the_holders_lease_ran_out",)),
    Mutation("lease-scheduler-kept-on-stop", "plugin/loop/scheduler.py",
             "                self.lease.release()", "                pass",
             (f"{CLUSTER}::test_a_scheduler_that_stops_hands_its_lease_on_at_once_and_a_skipped_tick_is_one_store_query",)),
    Mutation("lease-guard-no-recheck", "plugin/loop/scheduler.py",
             "if not await asyncio.to_thread(self.leads):  # the lease lapsed meanwhile",
             "if False:  # the lease lapsed meanwhile",
             (f"{CLUSTER}::test_a_guard_that_lost_its_lease_while_judging_leaves_the_rollback_to_the_new_holder",)),
    Mutation("lease-redaction-pass-unguarded", "plugin/redaction_worker.py",
             "        if not self.lease.hold():\n            return RedactionPass()", "        if False:\n            return RedactionPass()",
             (f"{CLUSTER}::test_one_redaction_worker_redacts_sweeps_and_purges_and_another_takes_over_when_it_stops",)),
    Mutation("lease-redaction-kept-on-stop", "plugin/redaction_worker.py",
             "                self.lease.release()", "                pass",
             (f"{CLUSTER}::test_a_redaction_worker_that_stops_hands_its_lease_on_at_once",)),
    Mutation("redaction-stop-waits-the-pass-out", "plugin/redaction_worker.py",
             "process.join(timeout=STOP_GRACE_S)", "process.join()",
             (f"{CLUSTER}::test_a_worker_still_in_a_pass_at_shutdown_is_cut_and_its_lease_handed_on",)),
    Mutation("redaction-stop-keeps-the-lease", "plugin/redaction_worker.py",
             "            release(LOCK, self.lease.holder, url=self.url)", "            pass",
             (f"{CLUSTER}::test_a_worker_still_in_a_pass_at_shutdown_is_cut_and_its_lease_handed_on",)),
    Mutation("method-choice-without-golden-scores", "plugin/loop/methods.py",
             "golden_chrf=golden_chrf(generator, folders[version], settings=settings))", "golden_chrf=None)",
             ("tests/test_preference_training.py::test_refresh_second_candidate_is_trained_and_the_method_chosen",)),
    Mutation("scheduler-parallel-off-by-one", "plugin/loop/scheduler.py",
             "if len(self.refreshing()) >= self.settings.refresh_parallel_brands:",
             "if len(self.refreshing()) > self.settings.refresh_parallel_brands:",
             (f"{SCHED}::test_one_brand_at_a_time_skips_a_second_due_brand_until_the_first_ends",)),
    Mutation("scheduler-stops-on-error", "plugin/loop/scheduler.py",
             'log.exception("the refresh scheduler hit an error; it keeps running")', "return",
             (f"{SCHED}::test_the_scheduler_keeps_running_after_an_error_or_a_conflict",)),
    Mutation("new-reviews-since-any-brands-refresh", "plugin/loop/scheduler.py",
             'last_started(session, "refresh", brand_id)', 'last_started(session, "refresh")',
             (f"{SCHED}::test_a_default_brand_refresh_does_not_reset_the_business_brands_new_review_count",)),
    # --- retention --------------------------------------------------------------------------------------------------
    Mutation("restore-seal-not-checked", "collector/backup.py",
             "        check_seal(path, kind=kind, key=key)", "        pass",
             ("tests/test_backup.py::test_restore_reads_only_backups_sealed_with_this_installations_key",)),
    Mutation("restore-seal-signature-ignored", "collector/backup_seal.py",
             "if not hmac.compare_digest(seal.signature, _sign(seal, key)):", "if False:",
             ("tests/test_backup.py::test_restore_reads_only_backups_sealed_with_this_installations_key",)),
    Mutation("restore-seal-bytes-ignored", "collector/backup_seal.py",
             "if seal.kind != kind or seal.bytes != backup.stat().st_size or seal.sha256 != sha256_file(backup):",
             "if seal.kind != kind:",
             ("tests/test_backup.py::test_restore_reads_only_backups_sealed_with_this_installations_key",)),
    # --- redaction thresholds (collector/pii/conversation.py) ------------------------------------------------------
    Mutation("pii-score-threshold-high", "collector/pii/conversation.py",
             "_SCORE_THRESHOLD = 0.5", "_SCORE_THRESHOLD = 0.9",
             ("tests/test_pii_conversation.py",)),
    # (0.5 -> 0.2 is an equivalent change today: every recognizer HouseStyle loads scores 0.7 or more, or 0.5 for an
    # IBAN, and Presidio drops a pattern match that fails validation at 0; so only raising the threshold can bite)
    Mutation("pii-known-name-common-word-zipf-high", "collector/pii/conversation.py",
             "            if lexicon.is_common_word(part, 4.6) and not", "            if lexicon.is_common_word(part, 6.5) and not",
             ("tests/test_pii_conversation.py::test_a_known_names_parts_are_redacted_alone_only_when_rarer_than_common_words",)),
    Mutation("pii-known-name-common-word-zipf-low", "collector/pii/conversation.py",
             "            if lexicon.is_common_word(part, 4.6) and not", "            if lexicon.is_common_word(part, 3.0) and not",
             ("tests/test_pii_conversation.py::test_a_known_names_parts_are_redacted_alone_only_when_rarer_than_common_words",)),
    Mutation("retention-hours-not-days", "collector/pii/erasure.py",
             "cutoff = utcnow() - timedelta(days=settings.raw_retention_days)",
             "cutoff = utcnow() - timedelta(hours=settings.raw_retention_days)",
             (f"{DB}::test_raw_text_is_purged_a_day_past_the_retention_period_and_kept_a_day_before_it",)),
    Mutation("retention-newer-not-older", "collector/pii/erasure.py",
             "Conversation.created_at < cutoff", "Conversation.created_at > cutoff",
             (f"{DB}::test_raw_text_is_purged_a_day_past_the_retention_period_and_kept_a_day_before_it",)),
    Mutation("erasure-phone-min-digits-6", "collector/pii/erasure.py",
             "if len(_digits(phone or \"\")) < 7:", "if len(_digits(phone or \"\")) < 6:",
             (f"{DB}::test_erasure_by_phone_needs_seven_digits_exactly",)),
    Mutation("erasure-phone-min-digits-8", "collector/pii/erasure.py",
             "if len(_digits(phone or \"\")) < 7:", "if len(_digits(phone or \"\")) < 8:",
             (f"{DB}::test_erasure_by_phone_needs_seven_digits_exactly",)),
    # --- the canary split -------------------------------------------------------------------------------------------
    Mutation("canary-split-inclusive", "serving/routing.py",
             "if bucket < self.canary_share:", "if bucket <= self.canary_share:",
             (f"{DB}::test_a_conversation_exactly_at_the_share_stays_on_the_live_version",)),
    Mutation("canary-split-complement", "serving/routing.py",
             "if bucket < self.canary_share:", "if bucket > self.canary_share:",
             (f"{DB}::test_the_canary_serves_its_share_of_conversations_and_each_stays_on_its_side",)),
    Mutation("canary-not-sticky", "serving/routing.py",
             "bucket = canary_bucket(conversation_key) if conversation_key else random.random()",
             "bucket = random.random()",
             (f"{DB}::test_the_canary_serves_its_share_of_conversations_and_each_stays_on_its_side",)),
    Mutation("canary-bucket-scale", "serving/routing.py",
             'return int.from_bytes(digest[:8], "big") / 2**64', 'return int.from_bytes(digest[:8], "big") / 2**63',
             (f"{DB}::test_canary_buckets_are_uniform_over_zero_to_one",)),
    Mutation("canary-full-share-ignored", "serving/routing.py",
             "if self.canary is not None and self.canary_share > 0:",
             "if self.canary is not None and 0 < self.canary_share < 1:",
             (f"{DB}::test_share_zero_never_and_share_one_always_routes_to_the_canary",)),
    Mutation("verdict-canary-at-zero-share", "plugin/loop/decision.py",
             "if canary_share > 0:", "if canary_share >= 0:",
             (f"{DB}::test_a_refresh_verdict_goes_through_the_gateway_as_a_promotion_or_a_canary_at_its_share",)),
    Mutation("verdict-canary-share-dropped", "plugin/loop/decision.py",
             "self._run(self.gateway.canary(version, share, actor=actor, reason=reason))",
             "self._run(self.gateway.canary(version, 1.0, actor=actor, reason=reason))",
             (f"{DB}::test_a_refresh_verdict_goes_through_the_gateway_as_a_promotion_or_a_canary_at_its_share",)),
    Mutation("canary-route-full-share", "serving/swaps.py",
             "table.canary, table.canary_share = loaded, share",
             "table.canary, table.canary_share = loaded, 1.0",
             ("tests/test_admin_swaps.py::test_an_admin_starts_a_canary_that_answers_its_share_and_each_conversation_keeps_its_version",)),
    Mutation("canary-route-not-ended", "serving/swaps.py",
             "nothing to end\")\n                table.canary, table.canary_share = None, 0.0",
             "nothing to end\")\n                table.canary_share = table.canary_share",
             ("tests/test_admin_swaps.py::test_an_admin_starts_a_canary_that_answers_its_share_and_each_conversation_keeps_its_version",)),
    # --- LoRA slots: a swap never asks vLLM to hold more adapters than it was started with -------------------------
    Mutation("slots-inclusive", "serving/swaps.py",
             "if len(self.routes.names_in_use()) + 1 > self.max_loras:",
             "if len(self.routes.names_in_use()) + 1 >= self.max_loras:",
             ("tests/test_admin_swaps.py::test_a_swap_past_the_lora_slots_vllm_holds_is_refused_and_nothing_changes",)),
    Mutation("slots-without-the-one-swapping-in", "serving/swaps.py",
             "if len(self.routes.names_in_use()) + 1 > self.max_loras:",
             "if len(self.routes.names_in_use()) > self.max_loras:",
             ("tests/test_admin_swaps.py::test_a_swap_past_the_lora_slots_vllm_holds_is_refused_and_nothing_changes",)),
    # --- brand scope ------------------------------------------------------------------------------------------------
    Mutation("brand-scope-unchecked", "plugin/api/brand_scope.py",
             "if entry is None or not caller.may_act_on(entry.id):", "if entry is None:",
             (f"{DB}::test_a_key_acts_only_on_its_brands_and_others_look_missing",)),
    Mutation("brand-scope-several-as-one", "plugin/api/brand_scope.py",
             "if len(caller.brands) == 1:", "if len(caller.brands) >= 1:",
             (f"{DB}::test_a_key_acts_only_on_its_brands_and_others_look_missing",)),
    Mutation("brand-scope-lists-every-brand", "plugin/api/brand_scope.py",
             "for brand_id, entry in sorted(entries.items()) if caller.may_act_on(brand_id)]",
             "for brand_id, entry in sorted(entries.items())]",
             (f"{DB}::test_lists_show_only_the_keys_brands",)),
    Mutation("brand-filter-none", "plugin/api/brand_scope.py",
             "return None if caller.brands is None else list(caller.brands)", "return None",
             (f"{DB}::test_lists_show_only_the_keys_brands",)),
    Mutation("brand-may-act-and", "plugin/api/deps.py",
             "return self.brands is None or brand_id in self.brands",
             "return self.brands is not None and brand_id in self.brands",
             (f"{DB}::test_a_key_acts_only_on_its_brands_and_others_look_missing",)),
    # --- redaction thresholds ---------------------------------------------------------------------------------------
    Mutation("redaction-score-threshold-0.75", "collector/pii/conversation.py",
             "_SCORE_THRESHOLD = 0.5", "_SCORE_THRESHOLD = 0.75",
             ("tests/test_pii_conversation.py",)),
    Mutation("redaction-names-common-first-name-4.3", "collector/pii/recognizers/names.py",
             "not lexicon.is_common_word(first, 5.3)", "not lexicon.is_common_word(first, 4.3)",
             (f"{DB}::test_a_first_name_that_is_also_a_word_opens_a_full_name_only_below_zipf_5_3",)),
    Mutation("redaction-names-common-first-name-5.5", "collector/pii/recognizers/names.py",
             "not lexicon.is_common_word(first, 5.3)", "not lexicon.is_common_word(first, 5.5)",
             (f"{DB}::test_a_first_name_that_is_also_a_word_opens_a_full_name_only_below_zipf_5_3",)),
    Mutation("redaction-label-value-common", "collector/pii/recognizers/labels.py",
             "return not lexicon.is_common_word(value, threshold=3.0)",
             "return not lexicon.is_common_word(value, threshold=5.0)",
             ("tests/test_pii_conversation.py", "tests/test_redaction.py")),
    # --- brand isolation on routes that name an object ----------------------------------------------------------------
    Mutation("brand-widget-message-any-brand", "plugin/api/routes/widget.py",
             "internal_id = conversation_for(session, conversation_id, caller, token).id",
             "internal_id = recorder.conversations_named(session, conversation_id)[0].id",
             (f"{ACCESS}::test_no_key_reaches_another_brands_object_on_any_route_in_either_direction",)),
    Mutation("brand-recalled-outdated-any-brand", "plugin/api/routes/reviews.py",
             "draft = in_scope(session, caller, draft_id)\n        if review_id not in",
             "draft = session.get(Draft, draft_id)\n        if review_id not in",
             (f"{ACCESS}::test_no_key_reaches_another_brands_object_on_any_route_in_either_direction",)),
    # --- streaming: the reply reaches the customer as it is written --------------------------------------------------
    Mutation("stream-guard-holds-everything", "plugin/reply_guard.py",
             "        if not ends:\n            return \"\"",
             "        if True:\n            return \"\"",
             ("tests/test_reply_path.py::"
              "test_a_streamed_reply_reaches_the_customer_sentence_by_sentence_as_the_model_writes_it",)),
    # --- DDP: the ranks average their gradients, each on its own shard ----------------------------------------------
    Mutation("ddp-wrap-bare-model", "trainer/distributed.py",
             "        return DistributedDataParallel(model, device_ids=device_ids)", "        return model",
             ("tests/test_ddp.py::test_two_ranks_step_together_and_match_one_process_on_the_union_batch",)),
    Mutation("ddp-every-rank-same-shard", "trainer/data.py",
             "    mine = rows[rank::world_size]", "    mine = rows[0::world_size]",
             ("tests/test_ddp.py::test_two_ranks_step_together_and_match_one_process_on_the_union_batch",)),
    Mutation("ddp-never-syncs", "trainer/fitting.py",
             "if last or self.world.size == 1 else self.step_model.no_sync()",
             "if self.world.size == 1 else self.step_model.no_sync()",
             ("tests/test_ddp.py::test_two_ranks_step_together_and_match_one_process_on_the_union_batch",)),
    # --- run rows of a stopped or dead process (tests/test_orphaned_runs.py) ----------------------------------------
    Mutation("orphans-tick-sweep-dropped", "plugin/loop/scheduler.py",
             "await asyncio.to_thread(close_runs_of_gone_holders, self.settings.resolved_database_url)",
             "await asyncio.sleep(0)",
             ("tests/test_orphaned_runs.py::test_rows_of_a_holder_whose_lease_ran_out_are_closed_by_the_next_scheduler_tick_and_a_live_"
              "holders_stay",)),
    Mutation("orphans-live-holder-closed", "core/locks.py",
             "            if why is None:\n                continue", "            if False:\n                continue",
             ("tests/test_orphaned_runs.py::test_rows_of_a_holder_whose_lease_ran_out_are_closed_by_the_next_scheduler_tick_and_a_live_"
              "holders_stay",)),
    Mutation("orphans-start-sweep-dropped", "plugin/api/app.py",
             "await asyncio.to_thread(close_runs_of_gone_holders, settings.resolved_database_url)",
             "await asyncio.sleep(0)",
             ("tests/test_orphaned_runs.py::test_rows_of_a_holder_whose_lease_ran_out_are_closed_when_a_service_starts",)),
    Mutation("orphans-shutdown-close-dropped", "plugin/loop/scheduler.py",
             "            self.close_interrupted_runs()", "            pass",
             ("tests/test_orphaned_runs.py::test_a_service_stopped_mid_refresh_closes_its_refreshs_outer_and_inner_rows_on_the_way_out",)),
    # --- a Postgres restore goes through a checked staging schema (tests/test_restore_staged.py) ---------------------
    Mutation("restore-staged-columns-unchecked", "collector/backup_staging.py",
             "        if missing := columns - set(data.columns):", "        if False:",
             ("tests/test_restore_staged.py::test_a_doctored_pg_dump_fails_its_check_in_staging_and_the_live_store_is_unchanged",),
             marks="postgres"),
    Mutation("restore-staged-at-head", "collector/backup_staging.py",
             "                migrate(connection, revision)", "                migrate(connection, \"head\")",
             ("tests/test_restore_staged.py::test_a_doctored_pg_dump_fails_its_check_in_staging_and_the_live_store_is_unchanged",),
             marks="postgres"),
    Mutation("restore-staged-never-committed", "collector/backup_staging.py",
             "            with engine.begin() as connection:", "            with engine.connect() as connection:",
             ("tests/test_restore_staged.py::test_a_good_pg_restore_swaps_in_through_staging_keeps_the_schemas_grants_and_the_service_reads_it",),
             marks="postgres"),
    Mutation("restore-staged-children-first", "collector/backup_staging.py",
             "get_sorted_table_and_fkc_names(schema=staging) if table in present]",
             "get_sorted_table_and_fkc_names(schema=staging) if table in present][::-1]",
             ("tests/test_restore_staged.py::test_a_good_pg_restore_swaps_in_through_staging_keeps_the_schemas_grants_and_the_service_reads_it",),
             marks="postgres"),
    Mutation("restore-staged-seed-rows-kept", "collector/backup_staging.py",
             "    connection.execute(text(\"TRUNCATE \" + ", "    0 and connection.execute(text(\"TRUNCATE \" + ",
             ("tests/test_restore_staged.py::test_a_good_pg_restore_swaps_in_through_staging_keeps_the_schemas_grants_and_the_service_reads_it",),
             marks="postgres"),
    # --- issue 28: the hostile tests' fixes, each undone in one line (the restore's seal and staging: restore-seal-*,
    # restore-staged-* above) ------------------------------------------------------------------------------------------
    Mutation("hostile-redraft-first-page-only", "plugin/redrafter.py",
             "following = (rows[-1].updated_at, rows[-1].id) if len(rows) == page else None", "following = None",
             ("tests/test_redrafter_backlog.py::test_a_pass_drafts_every_page_and_reports_the_backlog",)),
    Mutation("hostile-redraft-idle-never-closed", "plugin/redrafter.py",
             "closed = await asyncio.to_thread(close_idle, url, idle_close_minutes=idle_minutes, now=now)",
             "closed = 0",
             ("tests/test_redrafter_backlog.py::test_a_pass_drafts_every_page_and_reports_the_backlog",)),
    Mutation("hostile-forget-email-substring", "collector/pii/erasure.py",
             "holds=lambda text: needle in emails_in(text),", "holds=lambda text: needle in text.lower(),",
             ("tests/test_hostile_two.py::test_forget_by_email_erases_only_that_whole_address",)),
    Mutation("hostile-forget-phone-digits-anywhere", "collector/pii/erasure.py",
             "holds=lambda text: wanted in phones_in(text, region),",
             "holds=lambda text: _digits(wanted)[-10:] in _digits(text),",
             ("tests/test_hostile_two.py::test_forget_by_phone_erases_only_that_whole_number",)),
    Mutation("hostile-restore-sqlite-trigger-kept", "collector/backup.py",
             "        if code:\n            raise _refuse(path, f\"it holds {code[0][0]}",
             "        if False:\n            raise _refuse(path, f\"it holds {code[0][0]}",
             ("tests/test_restore_untrusted.py::test_a_doctored_sqlite_backup_is_refused_and_the_store_is_untouched",)),
    Mutation("hostile-restore-sqlite-hollow-kept", "collector/backup.py",
             "            _check_integrity(temp_url, path)", "            pass",
             ("tests/test_restore_untrusted.py::test_a_doctored_sqlite_backup_is_refused_and_the_store_is_untouched",)),
    Mutation("hostile-export-not-private", "collector/export/staging.py",
             "    make_private(staging)", "    pass",
             ("tests/test_hostile_two.py::test_an_export_is_private_whatever_the_umask",)),
    Mutation("hostile-export-unredacted-over-http", "plugin/api/routes/admin.py",
             "    if not body.redact:", "    if False:",
             ("tests/test_hostile_two.py::test_an_unredacted_export_is_refused_over_http",)),
    Mutation("hostile-widget-any-mode", "plugin/api/routes/widget.py",
             "if asked is not None and asked != configured and asked.value not in settings.widget_modes:",
             "if False:",
             ("tests/test_hostile_two.py::test_a_customer_chooses_only_what_the_operator_lists",
              "tests/test_hostile_two.py::test_the_widget_key_cannot_start_an_auto_conversation_on_an_assist_channel")),
    Mutation("hostile-widget-any-channel", "plugin/api/routes/widget.py",
             "    if channel not in settings.widget_channels:", "    if False:",
             ("tests/test_hostile_two.py::test_a_customer_chooses_only_what_the_operator_lists",)),
    Mutation("hostile-knowledge-symlink-followed", "collector/knowledge/cli.py",
             "            if os.path.islink(os.path.join(root, name)):", "            if False:",
             ("tests/test_hostile_two.py::test_knowledge_add_refuses_a_symlink_in_a_folder",)),
    Mutation("hostile-chatwoot-name-not-cleaned", "plugin/connectors/chatwoot_payloads.py",
             "return storable_text(value).strip()[:limit] or None", "return value.strip()[:limit] or None",
             ("tests/test_input_edges.py::test_a_chatwoot_senders_unstorable_name_is_cleaned_and_the_message_kept",)),
    Mutation("hostile-chatwoot-name-not-cut", "plugin/connectors/chatwoot_payloads.py",
             "return storable_text(value).strip()[:limit] or None", "return storable_text(value).strip() or None",
             ("tests/test_input_edges.py::test_a_chatwoot_senders_unstorable_name_is_cleaned_and_the_message_kept",)),
    Mutation("hostile-chatwoot-id-unbounded", "plugin/connectors/chatwoot_payloads.py",
             "PlatformId = Annotated[int, Field(ge=0, le=MAX_ID)]", "PlatformId = Annotated[int, Field()]",
             ("tests/test_input_edges.py::test_an_absurd_chatwoot_id_is_a_422",)),
    Mutation("hostile-chat-part-text-any-type", "plugin/openai/protocol.py",
             "            if part.get(\"type\") == \"text\" and not isinstance(part.get(\"text\"), str):",
             "            if False:",
             ("tests/test_input_edges.py::test_a_bad_chat_completion_body_is_a_422",)),
    # a lone surrogate in `model` is refused by pydantic's own str parsing: only a NUL tells `Text` from `str` there
    Mutation("hostile-chat-model-unstorable", "plugin/openai/protocol.py",
             "    model: Text = Field(min_length=1, max_length=200)", "    model: str = Field(min_length=1, max_length=200)",
             ("tests/test_chat_model_field.py",)),
    # ... and its 422 is answered at all only because the body that echoes the surrogate is ASCII-escaped (else a 500)
    Mutation("hostile-422-echo-not-ascii", "plugin/api/errors.py",
             'return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)',
             'return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)',
             ("tests/test_input_edges.py::test_a_bad_chat_completion_body_is_a_422",)),
    Mutation("hostile-chat-user-unstorable", "plugin/openai/protocol.py",
             "    user: Text | None = Field(default=None, max_length=200,",
             "    user: str | None = Field(default=None, max_length=200,",
             ("tests/test_input_edges.py::test_a_bad_chat_completion_body_is_a_422",)),
    Mutation("hostile-coverage-other-brands-documents", "collector/coverage/report.py",
             "select(func.count(KnowledgeDocument.id)).where(of_brand(settings.brand))",
             "select(func.count(KnowledgeDocument.id))",
             ("tests/test_brand_leaks.py::test_the_coverage_report_counts_only_the_brands_own_and_shared_knowledge",)),
    Mutation("hostile-coverage-other-brands-passages", "collector/coverage/report.py",
             "        .where(of_brand(settings.brand))\n    ).all()", "    ).all()",
             ("tests/test_brand_leaks.py::test_the_coverage_report_counts_only_the_brands_own_and_shared_knowledge",)),
    Mutation("hostile-knowledge-deep-json-traceback", "collector/knowledge/parsers.py",
             "        except RecursionError:", "        except ZeroDivisionError:",
             ("tests/test_hostile_two.py::test_a_hostile_knowledge_file_is_one_error_line",)),
    Mutation("hostile-knowledge-nul-stored", "collector/knowledge/loaders.py",
             "if problem := next(filter(None, map(unstorable, [*section.headings, *section.blocks])), None):",
             "if problem := None:",
             ("tests/test_hostile_two.py::test_a_hostile_knowledge_file_is_one_error_line",)),
    Mutation("hostile-knowledge-size-unchecked", "collector/knowledge/loaders.py",
             "if max_bytes is not None and size > max_bytes and not path.is_dir():", "if False:",
             ("tests/test_hostile_two.py::test_a_knowledge_file_over_the_size_limit_is_refused_before_it_is_read",)),
    Mutation("hostile-adapter-404-names-the-brand", "plugin/api/routes/admin.py",
             "        caller.check_brand(adapter.brand_id, missing)",
             "        caller.check_brand(adapter.brand_id, NotFoundError(f\"adapter version {version} is another brand's\"))",
             ("tests/test_brand_leaks.py::test_another_brands_version_answers_exactly_as_an_unknown_one",)),
    Mutation("hostile-unknown-keys-unlimited", "plugin/api/deps.py",
             "        if guessing > 0:  # too many unknown keys", "        if False:  # too many unknown keys",
             ("tests/test_hostile_two.py::test_unknown_keys_are_rate_limited_per_address_before_any_store_lookup",)),
    Mutation("hostile-inner-run-without-holder", "core/runs.py",
             "        holder = holder or HELD_LOCK.get()", "        holder = holder",
             ("tests/test_hostile_two.py::test_a_refresh_killed_mid_training_has_its_inner_train_run_closed_too",)),
    Mutation("hostile-control-fullwidth-bars", "core/prompts.py",
             r'r"|/?\uff5c[^\s<>\uff5c]{1,40}\uff5c>"', 'r""',
             ("tests/test_control_strings.py::test_a_customer_cannot_forge_a_deepseek_or_llama2_turn",
              "tests/test_control_strings.py::test_every_template_familys_control_strings_are_neutralised")),
    Mutation("hostile-control-inst-brackets", "core/prompts.py",
             r'r"|\[(?=/?[A-Z][A-Z0-9_]{1,29}\])"', 'r""',
             ("tests/test_control_strings.py::test_a_customer_cannot_forge_a_deepseek_or_llama2_turn",
              "tests/test_control_strings.py::test_every_template_familys_control_strings_are_neutralised")),
    Mutation("hostile-control-llama2-sys", "core/prompts.py",
             r'r"|</?[A-Z][A-Z_]{0,29}>>)"', 'r")"',
             ("tests/test_control_strings.py::test_a_customer_cannot_forge_a_deepseek_or_llama2_turn",
              "tests/test_control_strings.py::test_every_template_familys_control_strings_are_neutralised")),
    Mutation("hostile-import-line-cap-unapplied", "collector/importer.py",
             "            if len(content) > max_line_bytes:", "            if False:",
             ("tests/test_import_line_cap.py::test_a_line_over_the_cap_is_one_bad_line_and_the_rest_lands",)),
    Mutation("hostile-import-line-read-whole", "collector/importer.py",
             "while raw := handle.readline(read_at_most):", "while raw := handle.readline():",
             ("tests/test_import_line_cap.py::test_an_oversized_line_is_never_held_whole",)),
    # --- fingerprints: a replica serving other weights under a version's name is caught -----------------------------
    Mutation("fingerprint-swap-unchecked", "serving/swaps.py",
             '            await self.fingerprints.check(replicas, loaded, consequence="the swap is refused, nothing '
             'changed")\n', "",
             (f"{FP}::test_replicas_that_disagree_on_a_first_load_refuse_the_swap_and_record_nothing",)),
    Mutation("fingerprint-first-load-not-cross-checked", "serving/fingerprint.py",
             "for replica, fingerprint in zip(replicas, seen, strict=True):",
             "for replica, fingerprint in zip(replicas[:1], seen[:1], strict=True):",
             (f"{FP}::test_replicas_that_disagree_on_a_first_load_refuse_the_swap_and_record_nothing",)),
    Mutation("fingerprint-periodic-keeps-the-replica", "serving/gateway.py",
             "                        self.pool.mark_unhealthy(replica, str(exc))\n", "                        pass\n",
             (f"{FP}::test_the_periodic_check_takes_out_a_replica_serving_other_weights_and_it_rejoins_only_on_the_"
              "right_ones",)),
    Mutation("fingerprint-rejoin-unchecked", "serving/gateway.py",
             '                await self.fingerprints.check([replica], loaded, consequence="it stays out of the pool")\n',
             "",
             (f"{FP}::test_the_periodic_check_takes_out_a_replica_serving_other_weights_and_it_rejoins_only_on_the_"
              "right_ones",)),
    Mutation("fingerprint-repair-unchecked", "serving/gateway.py",
             '                    await self.fingerprints.check([replica], loaded, consequence="it is taken out of the '
             'pool")\n            except UpstreamError',
             "            except UpstreamError",
             (f"{FP}::test_a_lost_name_loaded_again_with_other_weights_takes_the_replica_out",)),
    Mutation("fingerprint-not-recorded", "core/registry.py",
             ".where(AdapterVersion.version == version, unchanged)",
             ".where(AdapterVersion.version == version, unchanged, AdapterVersion.id < 0)",
             (f"{FP}::test_the_periodic_check_takes_out_a_replica_serving_other_weights_and_it_rejoins_only_on_the_"
              "right_ones",)),
    Mutation("fingerprint-mismatch-not-counted", "serving/fingerprint.py", "            self.mismatches[key] += 1\n", "",
             (f"{FP}::test_a_lost_name_loaded_again_with_other_weights_takes_the_replica_out",)),
    Mutation("fingerprint-near-tie-any-token", "serving/fingerprint.py", "and seen_token == runner_up", "and True",
             (f"{FP}::test_a_fingerprint_differs_on_a_confident_token_or_log_prob_not_on_rounding",)),
    Mutation("fingerprint-log-prob-ignored", "serving/fingerprint.py",
             "if abs(seen_logprob - logprob) > LOGPROB_TOLERANCE:", "if False:",
             (f"{FP}::test_a_fingerprint_differs_on_a_confident_token_or_log_prob_not_on_rounding",)),
    Mutation("fingerprint-rejoin-reloads-every-name", "serving/gateway.py",
             'consequence="it is loaded again")\n                        continue\n',
             'consequence="it is loaded again")\n                        raise FingerprintMismatchError(name)\n',
             (f"{FP}::test_the_periodic_check_takes_out_a_replica_serving_other_weights_and_it_rejoins_only_on_the_"
              "right_ones",)),
    # --- shared replicas: one name per version for the fleet, unloaded by the last to let go ---------------------
    Mutation("shared-name-not-recorded", "serving/swaps.py",
             "return loaded.vllm_name if self.shared is not None else None", "return None",
             (f"{SHARED}::test_services_sharing_a_vllm_load_each_version_once_and_the_last_to_let_go_unloads_it",)),
    Mutation("shared-unload-while-another-uses-it", "serving/shared_names.py", "return name not in others",
             "return True",
             (f"{SHARED}::test_services_sharing_a_vllm_load_each_version_once_and_the_last_to_let_go_unloads_it",)),
    Mutation("shared-own-row-counts-as-another", "core/served_names.py",
             "select(ServedNames).where(ServedNames.holder != holder)", "select(ServedNames)",
             (f"{SHARED}::test_a_name_counts_as_used_only_by_a_living_other_service",)),
    Mutation("shared-name-claimed-twice", "core/registry.py", "AdapterVersion.vllm_name.is_(None),\n", "",
             (f"{SHARED}::test_a_name_is_claimed_once_and_only_for_a_served_version",)),
    Mutation("shared-stale-name-loaded-again", "serving/swaps.py",
             "if recorded and not await self.shared.still_named(loaded.version, loaded.vllm_name):",
             "if False:",
             (f"{SHARED}::test_a_lagging_service_never_loads_a_name_the_registry_moved_on_from",)),
    # --- the adapter store: a version is served only from a copy checked against its manifest ----------------------
    Mutation("store-fetch-unchecked", "core/adapter_store.py",
             "                if sha256_file(staging / name) != files[name]:", "                if False:",
             (f"{AS}::test_a_tampered_or_incomplete_version_is_refused_and_nothing_is_cached",)),
    Mutation("store-manifest-any-version", "core/adapter_store.py",
             "if not combined_hash(files).startswith(suffix):", "if False:",
             (f"{AS}::test_a_manifest_is_that_versions_or_refused",)),
    Mutation("store-publish-changed-folder", "core/adapter_store.py",
             "        if changed is not None:\n", "        if False:\n",
             (f"{AS}::test_a_changed_folder_or_a_clashing_copy_is_not_published",)),
    # --- answer memory holds a brand's newest exchanges, up to HOUSESTYLE_MEMORY_MAX_EXCHANGES ------------------------
    Mutation("memory-limit-unapplied", "collector/memory/recall.py",
             "batch = read_exchanges(session, brand_id, newest=newest)", "batch = read_exchanges(session, brand_id)",
             ("tests/test_memory.py::test_memory_holds_the_brands_newest_exchanges_up_to_its_limit",)),
    Mutation("memory-limit-keeps-the-oldest", "collector/memory/exchanges.py",
             ".order_by(Review.id.desc()).limit(newest)\n        ).all()[::-1]",
             ".order_by(Review.id).limit(newest)\n        ).all()",
             ("tests/test_memory.py::test_memory_holds_the_brands_newest_exchanges_up_to_its_limit",)),
    Mutation("memory-new-reviews-of-any-brand", "collector/memory/exchanges.py",
             "reviews = [row for row in read if row[1] in ours]", "reviews = read",
             ("tests/test_memory.py::test_brand_a_never_recalls_brand_bs_exchanges",)),
    # --- an erasure trims the cached memory index instead of rebuilding it -------------------------------------------
    Mutation("memory-erasure-keeps-the-postings", "collector/memory/index.py",
             "self.base.kept(keep[: self.base_rows])", "self.base",
             ("tests/test_memory.py::test_an_index_without_erased_exchanges_holds_and_ranks_as_one_built_without_them",)),
    Mutation("memory-erasure-not-trimmed", "collector/memory/recall.py",
             "        if gone := reviews_gone(session, index.positions):", "        if gone := set():",
             ("tests/test_memory.py::test_an_erasure_trims_the_brands_cached_index_and_leaves_other_brands_indexes_as_they_were",)),
    Mutation("memory-erasure-rebuilds", "collector/memory/recall.py",
             "    if index is None or index.tail_rows > max(", "    if index is None or index.stamp.audit != stamp.audit or index.tail_rows > max(",
             ("tests/test_memory.py::test_an_erasure_trims_the_brands_cached_index_and_leaves_other_brands_indexes_as_they_were",)),
]


def copy_repo() -> Path:
    target = Path(tempfile.mkdtemp(prefix="housestyle-mutants-")) / "repo"
    shutil.copytree(REPO, target, ignore=IGNORE, symlinks=True)
    return target


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float, marks: str = MARKS) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", "--rootdir", str(copy),
               "-m", marks, *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return done.returncode, done.stdout + done.stderr


def first_failure(output: str) -> str:
    match = re.search(r"^FAILED (\S+)", output, re.MULTILINE)
    if match:
        return match.group(1)
    match = re.search(r"^ERROR (\S+)", output, re.MULTILINE)
    return f"ERROR {match.group(1)}" if match else "(no failing test named)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="run only the mutations whose id contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per pytest run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.k in m.id]
    if args.list:
        for m in chosen:
            print(f"{m.id}: {m.file}: {m.old!r} -> {m.new!r}")
        return 0

    for m in chosen:  # every change must apply to the checkout as it is now
        count = (REPO / m.file).read_text(encoding="utf-8").count(m.old)
        if count != 1:
            print(f"{m.id}: {m.old!r} occurs {count} times in {m.file}; fix the mutation list", file=sys.stderr)
            return 2

    copy = copy_repo()
    print(f"copy at {copy}", flush=True)
    try:
        probe = subprocess.run([sys.executable, "-c", "import plugin.loop.gate as g; print(g.__file__)"], cwd=copy,
                               env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True,
                               check=False)
        if not probe.stdout.strip().startswith(str(copy)):
            print(f"the copy's modules are not the ones imported: {probe.stdout}{probe.stderr}", file=sys.stderr)
            return 2
        started = time.monotonic()
        for marks in dict.fromkeys(m.marks for m in chosen):
            every_test = tuple(dict.fromkeys(t for m in chosen if m.marks == marks for t in m.tests))
            code, output = run_tests(copy, every_test, args.timeout, marks)
            if code != 0:
                print(f"baseline: the listed tests do not pass unchanged (exit {code}):\n{output[-3000:]}")
                return 2
            print(f"baseline: {len(every_test)} test groups ({marks}) pass unchanged "
                  f"({time.monotonic() - started:.0f}s)", flush=True)

        survivors, rows = [], []
        for m in chosen:
            path = copy / m.file
            original = path.read_text(encoding="utf-8")
            path.write_text(original.replace(m.old, m.new, 1), encoding="utf-8")
            try:
                started = time.monotonic()
                code, output = run_tests(copy, m.tests, args.timeout, m.marks)
            finally:
                path.write_text(original, encoding="utf-8")
            seconds = time.monotonic() - started
            if code == 1:
                verdict = f"killed   by {first_failure(output)}"
            elif code == 0:
                verdict = "SURVIVED"
                survivors.append(m.id)
            else:
                verdict = f"killed   (pytest exit {code}: {first_failure(output)})"
            rows.append(f"{m.id:40s} {verdict}  [{seconds:.0f}s]")
            print(rows[-1], flush=True)

        print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutations killed; "
              f"{len(survivors)} survived{': ' + ', '.join(survivors) if survivors else ''}")
        return 1 if survivors else 0
    finally:
        if not args.keep:
            shutil.rmtree(copy.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
