"""Exact and near-duplicate conversations, and canned macro replies beyond a cap, found with MinHash + LSH in numpy.

The export streams conversations once and calls `DuplicateFinder.add_batch` per chunk; each conversation leaves a
fixed-size fingerprint (an exact hash and a 32-value MinHash signature of its word bigrams, ~140 bytes) and one
hash per reply. `plan()` then decides, in order of arrival, which to drop:

- exact duplicates: the same exchanges after lower-casing and collapsing white space;
- near duplicates: some earlier kept conversation shares an LSH band with it (8 bands x 4 rows) and their
  signatures agree on at least `threshold` of their values (the MinHash estimate of word-bigram Jaccard);
- macro copies: a reply whose normalised text was already kept `max_macro_copies` times (canned replies).

Why not datasketch's MinHashLSH: it keeps a Python object per conversation and per band; signatures in one numpy
array and banding by sorting keep 100,000 conversations in a few MB and well under a second.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np
import xxhash

NUM_PERM = 32
BANDS = 8
ROWS = NUM_PERM // BANDS
_SEED = 20240613  # fixed: fingerprints, and so decisions, must be the same on every run

_rng = np.random.default_rng(_SEED)
# multiply-shift hashing (Dietzfelbinger): odd 64-bit multipliers, top 32 bits of a*x+b are a universal hash
_A = _rng.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_B = _rng.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)
_BAND_MIX = _rng.integers(1, 2**63, size=ROWS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_SHIFT = np.uint64(32)
_BIGRAM_MIX = np.uint64(0x9E3779B97F4A7C15)


def normalise(text: str) -> str:
    """The form two texts are compared in: lower case, runs of white space as one space."""
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class DedupPlan:
    """What to drop: `drop[i]` for the i-th conversation added, `reply_over_cap[j]` for the j-th reply."""

    drop: np.ndarray  # int8 per conversation: KEEP, EXACT or NEAR
    reply_over_cap: np.ndarray  # bool per reply, in the order the replies were added

    KEEP = 0
    EXACT = 1
    NEAR = 2

    @property
    def exact_duplicates(self) -> int:
        return int((self.drop == self.EXACT).sum())

    @property
    def near_duplicates(self) -> int:
        return int((self.drop == self.NEAR).sum())

    @property
    def macro_copies(self) -> int:
        return int(self.reply_over_cap.sum())


@dataclass(frozen=True)
class BatchFingerprints:
    """Fingerprints of a run of conversations: small, so worker processes can send them back cheaply."""

    exact: array  # uint64 per conversation
    signatures: np.ndarray  # conversations x NUM_PERM, uint32
    reply_hashes: array  # uint64 per reply
    reply_owner: array  # index (within the batch) of each reply's conversation


def fingerprint_batch(conversations: list[list[tuple[str, str]]] | list[list[list[str]]]) -> BatchFingerprints:
    """Fingerprint conversations given as their (customer text, reply) exchanges."""
    exact, reply_hashes, reply_owner = array("Q"), array("Q"), array("I")
    docs: list[bytes] = []
    hash64 = xxhash.xxh64_intdigest
    for owner, exchanges in enumerate(conversations):
        parts = []
        for customer, reply, *_ in exchanges:  # a grounded exchange also carries its passages
            reply_n = " ".join(reply.lower().split())
            parts.append(" ".join(customer.lower().split()))
            parts.append(reply_n)
            reply_hashes.append(hash64(reply_n.encode()))
            reply_owner.append(owner)
        doc = " ".join(parts).encode()
        exact.append(hash64(doc))
        docs.append(doc)
    word_hashes, doc_ends = _word_hashes(docs)
    signatures = _minhash(word_hashes, doc_ends)
    return BatchFingerprints(exact=exact, signatures=signatures, reply_hashes=reply_hashes, reply_owner=reply_owner)


_WORD_PRIME = np.uint64(0x100000001B3)  # FNV's 64-bit prime: an odd multiplier for a polynomial hash
_MAX_WORD = 64  # bytes of a word that count towards its hash
_POWERS = np.cumprod(np.r_[np.uint64(1), np.full(_MAX_WORD - 1, _WORD_PRIME, dtype=np.uint64)], dtype=np.uint64)


def _word_hashes(docs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of every space-separated word of every doc, and where each doc's words end, all in numpy."""
    buffer = np.frombuffer(b"\x1f".join(docs) + b"\x1f", dtype=np.uint8)
    doc_break = buffer == 0x1F
    separator = (buffer == 0x20) | doc_break
    word_start = ~separator
    word_start[1:] &= separator[:-1]
    starts = np.flatnonzero(word_start)
    if not len(starts):
        return np.zeros(0, dtype=np.uint64), np.zeros(len(docs), dtype=np.int64)
    # each byte's offset in its word (capped); separators, and anything before the first word, count nothing
    index = np.arange(len(buffer))
    offset = index - np.maximum.accumulate(np.where(word_start, index, 0))
    np.minimum(offset, _MAX_WORD - 1, out=offset)
    terms = buffer.astype(np.uint64)
    terms *= _POWERS[offset]
    terms[separator] = 0
    hashes = np.add.reduceat(terms, starts)
    hashes ^= hashes >> np.uint64(29)  # mix the high bits down: the polynomial leaves low bits weak
    hashes *= np.uint64(0xBF58476D1CE4E5B9)
    hashes ^= hashes >> np.uint64(32)
    doc_of_word = np.searchsorted(np.flatnonzero(doc_break), starts)  # breaks before each word's start
    doc_ends = np.searchsorted(doc_of_word, np.arange(len(docs)), side="right")
    return hashes, doc_ends.astype(np.int64)


class DuplicateFinder:
    """Collects fingerprints while the export streams; `plan()` decides what to drop once all are in."""

    def __init__(self) -> None:
        self._exact = array("Q")
        self._signatures: list[np.ndarray] = []
        self._reply_hashes = array("Q")
        self._reply_owner = array("I")

    def __len__(self) -> int:
        return len(self._exact)

    def add(self, fingerprints: BatchFingerprints) -> None:
        """Take in the fingerprints of the next conversations, in export order."""
        offset = len(self._exact)
        self._exact.extend(fingerprints.exact)
        self._signatures.append(fingerprints.signatures)
        self._reply_hashes.extend(fingerprints.reply_hashes)
        self._reply_owner.extend(owner + offset for owner in fingerprints.reply_owner)

    def add_batch(self, conversations: list[list[tuple[str, str]]]) -> None:
        """Fingerprint conversations given as their (customer text, reply) exchanges, in export order."""
        self.add(fingerprint_batch(conversations))

    def plan(self, *, threshold: float, max_macro_copies: int, near: bool = True) -> DedupPlan:
        """Decide, keeping the first of each group, which conversations and which replies to drop."""
        count = len(self._exact)
        drop = np.zeros(count, dtype=np.int8)
        exact = np.frombuffer(self._exact, dtype=np.uint64) if count else np.zeros(0, np.uint64)
        _, first = np.unique(exact, return_index=True)
        drop[:] = DedupPlan.EXACT
        drop[first] = DedupPlan.KEEP
        if near and count:
            self._signatures = [np.concatenate(self._signatures)]  # one copy, not the pieces and the whole
            drop[_near_duplicates(self._signatures[0], drop == DedupPlan.KEEP, threshold)] = DedupPlan.NEAR
        return DedupPlan(drop=drop, reply_over_cap=self._macro_copies(drop, max_macro_copies))

    def _macro_copies(self, drop: np.ndarray, cap: int) -> np.ndarray:
        hashes = np.frombuffer(self._reply_hashes, dtype=np.uint64) if len(self._reply_hashes) else np.zeros(0, np.uint64)
        owners = np.frombuffer(self._reply_owner, dtype=np.uint32) if len(self._reply_owner) else np.zeros(0, np.uint32)
        over = np.zeros(len(hashes), dtype=bool)
        alive = np.flatnonzero(drop[owners] == DedupPlan.KEEP) if len(hashes) else np.zeros(0, np.int64)
        if not len(alive):
            return over
        order = np.argsort(hashes[alive], kind="stable")  # stable: within one text, earlier replies come first
        sorted_hashes = hashes[alive][order]
        group_start = np.r_[0, np.flatnonzero(sorted_hashes[1:] != sorted_hashes[:-1]) + 1]
        rank = np.arange(len(order)) - np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
        over[alive[order[rank >= cap]]] = True
        return over


def _minhash(word_hashes: np.ndarray, doc_ends: np.ndarray) -> np.ndarray:
    """MinHash signatures (docs x NUM_PERM, uint32) of each doc's word bigrams; a one-word doc uses its word."""
    docs = len(doc_ends)
    signatures = np.full((docs, NUM_PERM), np.iinfo(np.uint32).max, dtype=np.uint32)
    if not len(word_hashes):
        return signatures
    doc_of_word = np.repeat(np.arange(docs), np.diff(np.r_[0, doc_ends]))
    same_doc = doc_of_word[1:] == doc_of_word[:-1]
    bigrams = (word_hashes[:-1] * _BIGRAM_MIX) ^ word_hashes[1:]
    # docs of a single word keep that word as their only shingle
    starts = np.r_[0, doc_ends[:-1]]
    lengths = doc_ends - starts
    single = np.flatnonzero(lengths == 1)
    shingles = np.concatenate([bigrams[same_doc], word_hashes[starts[single]]])
    owners = np.concatenate([doc_of_word[1:][same_doc], single])
    if not len(shingles):
        return signatures
    if len(single):  # bigram owners come in order already
        order = np.argsort(owners, kind="stable")
        shingles, owners = shingles[order], owners[order]
    hashed = np.multiply(_A[:, None], shingles[None, :])  # in place from here: NUM_PERM x shingles is the big array
    hashed += _B[:, None]
    hashed >>= _SHIFT
    present = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    signatures[owners[present]] = np.minimum.reduceat(hashed, present, axis=1).T.astype(np.uint32)
    return signatures


def _near_duplicates(signatures: np.ndarray, alive: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of alive conversations similar enough to an earlier alive one that shares an LSH band with them."""
    index = np.flatnonzero(alive)
    if len(index) < 2:
        return np.zeros(0, dtype=np.int64)
    live = signatures if len(index) == len(signatures) else signatures[index]  # no copy when nothing was dropped
    duplicate = np.zeros(len(index), dtype=bool)
    for band in range(BANDS):
        keys = (live[:, band * ROWS : (band + 1) * ROWS].astype(np.uint64) * _BAND_MIX).sum(axis=1)
        order = np.argsort(keys, kind="stable")  # stable: the first of each bucket is the earliest conversation
        sorted_keys = keys[order]
        starts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
        first = np.repeat(order[starts], np.diff(np.r_[starts, len(order)]))
        candidates = np.flatnonzero(first != order)
        if not len(candidates):
            continue
        later, earlier = order[candidates], first[candidates]
        similarity = (live[later] == live[earlier]).mean(axis=1)
        duplicate[later[similarity >= threshold]] = True
    return index[duplicate]
