"""Fingerprints: what a version's weights answer to a fixed probe set, so a replica serving other weights is caught.

A vLLM name is only a label. An adapter loaded under it from outside, a stale copy of the folder on one host, or a
server that kept other weights answers under the right name with the wrong weights, and nothing else notices. So
every load of a version on a replica (a swap, a canary, following the registry, a replica rejoining after a restart,
a lost name loaded again) and every periodic check asks the replica the same few fixed questions, greedy, and
compares its answer with the version's recorded fingerprint: the one its first load answered (every replica of that
swap agreeing), kept in the registry (`AdapterVersion.fingerprint`), so every service on the store compares with
the same one.

What is compared: each probe's greedy tokens and their log-probs. On vLLM CPU 0.32 with the tiny base they were
bit-identical (runner-ups included) across loads, fresh names, three server processes (1 and 2 threads) and
batching under load; on a GPU the batch a probe lands in can move a logit by a rounding step, so a log-prob may
differ by up to LOGPROB_TOLERANCE, and at a near-tie (the recorded best two within that tolerance) the runner-up
may be chosen instead, after which the probe continues another text and is compared no further. Other adapters
differed from the first token of every probe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

from core import registry
from serving.errors import FingerprintMismatchError, UpstreamError
from serving.replicas import Replica
from serving.routing import LoadedVersion

log = logging.getLogger("housestyle.serving")

# fixed customer messages, as plain text: it works for every base, with a chat template or without (as the smoke
# request does), and a brand's own prompt may change while a version's weights may not
PROBE_MESSAGES = ("My SuperWidget is dead.", "Where is my order?")
# a probe costs sequences and decode steps (vLLM CPU, 2 shared cores: about 30 ms a sequence, 15 ms a step, and a
# swap took 50 ms before), and the first token's log-prob already tells adapters apart (every other adapter differed
# there): so two short probes in one request, with the runner-up at each step to tell rounding from other weights
PROBE_TOKENS = 2
LOGPROB_TOLERANCE = 0.1  # nats: far above rounding (bf16 logits step by 2^-7..2^-5 here), far below other weights
NO_RUNNER_UP = -1e30  # the log-prob recorded when vLLM named no second token


def probe_request(vllm_name: str) -> dict:
    """The probe set as one completion request: greedy, a fixed length whatever the model says, each token's
    log-prob and its runner-up's."""
    return {"model": vllm_name, "prompt": [f"Customer: {message}\nAgent:" for message in PROBE_MESSAGES],
            "temperature": 0, "max_tokens": PROBE_TOKENS, "ignore_eos": True, "logprobs": 2,
            "return_tokens_as_token_ids": True}


# a fingerprint recorded with other probes is not comparable: it is recorded again instead (see `recorded`)
PROBE_SET = hashlib.sha256(json.dumps(probe_request(""), sort_keys=True).encode()).hexdigest()[:16]


class Fingerprint(BaseModel):
    """Each probe's greedy tokens and their log-probs, and at each step the runner-up token and its log-prob."""

    probe_set: str = PROBE_SET
    tokens: list[list[str]]
    logprobs: list[list[float]]
    runners_up: list[list[str]]
    runner_up_logprobs: list[list[float]]

    def difference(self, seen: Fingerprint) -> str | None:
        """How `seen` differs from this recorded fingerprint, in words; None when it is the same weights."""
        for index, message in enumerate(PROBE_MESSAGES):
            steps = zip(self.tokens[index], self.logprobs[index], self.runners_up[index],
                        self.runner_up_logprobs[index], seen.tokens[index], seen.logprobs[index], strict=False)
            for step, (token, logprob, runner_up, runner_up_logprob, seen_token, seen_logprob) in enumerate(steps):
                where = f"probe {message!r}, token {step + 1}"
                if seen_token == token:
                    if abs(seen_logprob - logprob) > LOGPROB_TOLERANCE:
                        return (f"{where} has log-prob {seen_logprob:.3f}, recorded {logprob:.3f} "
                                f"(tolerance {LOGPROB_TOLERANCE})")
                    continue  # the same token: the next step sees the same text
                # another choice is rounding only at a near-tie, and only the runner-up, at its log-prob
                if (logprob - runner_up_logprob < LOGPROB_TOLERANCE and seen_token == runner_up
                        and abs(seen_logprob - runner_up_logprob) <= LOGPROB_TOLERANCE):
                    break  # what follows continues another text: nothing more to compare in this probe
                return f"{where} is {seen_token}, recorded {token}"
            else:
                if len(seen.tokens[index]) < len(self.tokens[index]):
                    return f"probe {message!r} stopped after {len(seen.tokens[index])} tokens"
        return None


async def take_fingerprint(replica: Replica, vllm_name: str) -> Fingerprint:
    """Ask `replica` the probe set under `vllm_name` and read its fingerprint."""
    answer = await replica.request("POST", "/v1/completions", probe_request(vllm_name))
    fields: dict[str, list[list]] = {"tokens": [], "logprobs": [], "runners_up": [], "runner_up_logprobs": []}
    try:
        choices = sorted(answer.json()["choices"], key=lambda choice: choice["index"])
        for choice in choices:
            steps = choice["logprobs"]
            runners_up = [max(((other, lp) for other, lp in top.items() if other != token),
                              key=lambda pair: pair[1], default=("", NO_RUNNER_UP))
                          for token, top in zip(steps["tokens"], steps["top_logprobs"], strict=True)]
            fields["tokens"].append(list(steps["tokens"]))
            fields["logprobs"].append([float(logprob) for logprob in steps["token_logprobs"]])
            fields["runners_up"].append([other for other, _ in runners_up])
            fields["runner_up_logprobs"].append([float(lp) for _, lp in runners_up])
        if len(choices) != len(PROBE_MESSAGES):
            raise ValueError(f"{len(choices)} answers to {len(PROBE_MESSAGES)} probes")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError(f"vLLM at {replica.url} answered the fingerprint probe of {vllm_name} without "
                            f"log-probs ({exc!r}); serve with vLLM's default --max-logprobs") from None
    return Fingerprint(**fields)


class FingerprintChecks:
    """Compares what replicas answer with each version's recorded fingerprint; counts and logs every mismatch."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        # (version, replica url) -> times that replica began answering unlike the version's fingerprint; while it
        # still does (a replica kept out is tried again every health round) it is neither counted nor logged again
        self.mismatches: Counter[tuple[str, str]] = Counter()
        self.failing: set[tuple[str, str]] = set()

    async def recorded(self, version: str) -> tuple[str | None, Fingerprint | None]:
        """The version's recorded fingerprint as stored and parsed; parsed None when none is, or it was taken with
        another probe set (then the next load records it again)."""
        text = await asyncio.to_thread(registry.recorded_fingerprint, version, database_url=self.database_url)
        return text, _parse(text)

    async def check(self, replicas: Sequence[Replica], loaded: LoadedVersion, *, consequence: str) -> None:
        """Every replica in `replicas` (each serving `loaded.vllm_name`) answers with the version's fingerprint; on
        its first load, they must agree with each other, and the first one's is recorded. Raises
        FingerprintMismatchError (counted and logged, naming the replica, the version and `consequence`)."""
        (stored, expected), *seen = await asyncio.gather(
            self.recorded(loaded.version), *(take_fingerprint(replica, loaded.vllm_name) for replica in replicas))
        first_load = expected is None
        reference = seen[0] if expected is None else expected
        for replica, fingerprint in zip(replicas, seen, strict=True):
            difference = reference.difference(fingerprint)
            if difference is not None:
                if first_load:
                    difference += f" on {replicas[0].url} (first load: replicas disagree, nothing recorded)"
                raise self._mismatch(replica, loaded, difference, consequence)
        if first_load:
            text = await asyncio.to_thread(registry.record_fingerprint, loaded.version, seen[0].model_dump_json(),
                                           replacing=stored, database_url=self.database_url)
            # another service may have recorded its own first load of the version a moment before this one
            winner = _parse(text)
            difference = winner.difference(seen[0]) if winner is not None else None
            if difference is not None:
                raise self._mismatch(replicas[0], loaded, difference, consequence)
        self.failing -= {(loaded.version, replica.url) for replica in replicas}

    def _mismatch(self, replica: Replica, loaded: LoadedVersion, difference: str,
                  consequence: str) -> FingerprintMismatchError:
        message = (f"replica {replica.url} does not serve version {loaded.version}'s weights under "
                   f"{loaded.vllm_name}: {difference}")
        key = (loaded.version, replica.url)
        if key in self.failing:
            log.debug("fingerprint mismatch again: %s; %s", message, consequence)
        else:
            self.failing.add(key)
            self.mismatches[key] += 1
            log.error("fingerprint mismatch: %s; %s", message, consequence)
        return FingerprintMismatchError(message)


def _parse(text: str | None) -> Fingerprint | None:
    if text is None:
        return None
    try:
        fingerprint = Fingerprint.model_validate_json(text)
    except ValidationError:
        return None
    return fingerprint if fingerprint.probe_set == PROBE_SET else None
