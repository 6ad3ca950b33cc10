"""Exact and near-duplicate conversations, and canned macro replies beyond a cap, found with MinHash + LSH in numpy.

The export streams conversations once and calls `DuplicateFinder.add` per page; each conversation leaves a
fixed-size fingerprint (an exact hash and a 32-value MinHash signature of its word bigrams) and one hash per reply,
written to scratch files so that memory does not grow with the export. `plan()` then decides, in order of arrival,
which to drop:

- exact duplicates: the same exchanges after lower-casing and collapsing white space;
- near duplicates: some earlier kept conversation shares an LSH band with it (8 bands x 4 rows) and their
  signatures agree on at least `threshold` of their values (the MinHash estimate of word-bigram Jaccard);
- macro copies: a reply whose normalised text was already kept `max_macro_copies` times (canned replies).

Why not datasketch's MinHashLSH: it keeps a Python object per conversation and per band in memory; fixed-size rows
on disk, partitioned by key and banded by sorting one partition at a time, plan 1,000,000 conversations in a few
seconds and tens of MB, the same as 100,000 (bench/export.py).
"""

from __future__ import annotations

import shutil
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


_RECORD = np.dtype([("key", "<u8"), ("group", "<u1"), ("item", "<u4"), ("owner", "<u4")])  # packed: 17 bytes
PARTITION_SIZE = 20_000  # conversations a partition is sized for: what `plan()` holds in memory at once
MAX_PARTITIONS = 128  # of each kind (exact, bands, replies): at most 384 files open while the export streams
_SIMILARITY_CHUNK = 16_384  # candidate pairs compared at once: their signatures (at most 4 MB) are read for them
_WINDOW_ROWS = 32_768  # signature rows (4 MB) of the file mapped in at once


class _Partitions:
    """Records appended to one of `count` files by their key, so that equal keys meet in one file; read back one
    file at a time."""

    def __init__(self, folder: Path, name: str, count: int) -> None:
        self.paths = [folder / f"{name}.{index}" for index in range(count)]
        self._files = [path.open("wb") for path in self.paths]

    def append(self, key: np.ndarray, group: np.ndarray | int, item: np.ndarray, owner: np.ndarray) -> None:
        records = np.empty(len(key), dtype=_RECORD)
        records["key"], records["group"], records["item"], records["owner"] = key, group, item, owner
        part = (records["key"] % np.uint64(len(self._files))).astype(np.intp)
        order = np.argsort(part, kind="stable")
        records = records[order]
        bounds = np.r_[0, np.cumsum(np.bincount(part, minlength=len(self._files)))]
        for index in np.flatnonzero(bounds[1:] > bounds[:-1]):
            self._files[index].write(records[bounds[index] : bounds[index + 1]].tobytes())

    def close(self) -> None:
        for file in self._files:
            file.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.paths:
            yield np.fromfile(path, dtype=_RECORD)


def _signature_rows(path: Path, rows: np.ndarray, count: int) -> np.ndarray:
    """The signatures of conversations `rows` (sorted, unique) from the signature file, mapped in one window at a
    time: mapping the whole file would leave every page read in memory (the kernel maps neighbours in on a fault)."""
    found = np.empty((len(rows), NUM_PERM), dtype=np.uint32)
    window = rows // _WINDOW_ROWS
    bounds = np.flatnonzero(np.r_[True, window[1:] != window[:-1], True]) if len(rows) else np.zeros(1, np.int64)
    for start, end in zip(bounds[:-1], bounds[1:]):
        first = int(window[start]) * _WINDOW_ROWS
        mapped = np.memmap(path, dtype=np.uint32, mode="r", offset=first * NUM_PERM * 4,
                           shape=(min(_WINDOW_ROWS, count - first), NUM_PERM))
        found[start:end] = mapped[rows[start:end] - first]
        del mapped  # unmapped here, before the next window
    return found


def _first_of_groups(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, group start positions) of records sorted by `keys` as np.lexsort sorts them (the last first); the
    first key only orders records within a group, the others make the groups."""
    order = np.lexsort(keys)
    change = np.zeros(len(order), dtype=bool)
    if len(order):
        change[0] = True
        for key in keys[1:]:
            sorted_key = key[order]
            change[1:] |= sorted_key[1:] != sorted_key[:-1]
    return order, np.flatnonzero(change)


class DuplicateFinder:
    """Collects fingerprints on disk while the export streams; `plan()` decides what to drop once all are in.

    Memory stays flat with the export's size: the band keys, exact hashes and reply hashes go to partition files by
    key (equal keys share a file) and the signatures to one file of fixed-size rows; `plan()` reads one partition
    at a time and maps in only the signatures it compares. Use it as a context manager: its files go on exit.
    """

    def __init__(self, folder: Path, *, expected: int, partition_size: int = PARTITION_SIZE) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        count = max(1, min(MAX_PARTITIONS, -(-expected // partition_size)))
        self._exact = _Partitions(folder, "exact", count)
        self._bands = _Partitions(folder, "bands", count)
        self._replies = _Partitions(folder, "replies", count)
        self._signature_path = folder / "signatures"
        self._signature_file = self._signature_path.open("wb")
        self._conversations = 0
        self._reply_count = 0

    def __enter__(self) -> DuplicateFinder:
        return self

    def __exit__(self, *_: object) -> None:
        self._close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __len__(self) -> int:
        return self._conversations

    def _close(self) -> None:
        for partitions in (self._exact, self._bands, self._replies):
            partitions.close()
        self._signature_file.close()

    def add(self, fingerprints: BatchFingerprints) -> None:
        """Take in the fingerprints of the next conversations, in export order."""
        count = len(fingerprints.exact)
        index = np.arange(self._conversations, self._conversations + count, dtype=np.uint32)
        self._exact.append(np.frombuffer(fingerprints.exact, dtype=np.uint64) if count else np.zeros(0, np.uint64),
                           0, index, index)
        bands = fingerprints.signatures.reshape(count, BANDS, ROWS).astype(np.uint64)
        keys = (bands * _BAND_MIX).sum(axis=2).T.ravel()  # band by band, as `group` and `item` below
        items = np.tile(index, BANDS)
        self._bands.append(keys, np.repeat(np.arange(BANDS, dtype=np.uint8), count), items, items)
        replies = len(fingerprints.reply_hashes)
        if replies:
            owner = np.frombuffer(fingerprints.reply_owner, dtype=np.uint32) + np.uint32(self._conversations)
            self._replies.append(np.frombuffer(fingerprints.reply_hashes, dtype=np.uint64), 0,
                                 np.arange(self._reply_count, self._reply_count + replies, dtype=np.uint32), owner)
        np.ascontiguousarray(fingerprints.signatures, dtype=np.uint32).tofile(self._signature_file)
        self._conversations += count
        self._reply_count += replies

    def add_batch(self, conversations: list[list[tuple[str, str]]]) -> None:
        """Fingerprint conversations given as their (customer text, reply) exchanges, in export order."""
        self.add(fingerprint_batch(conversations))

    def plan(self, *, threshold: float, max_macro_copies: int, near: bool = True) -> DedupPlan:
        """Decide, keeping the first of each group, which conversations and which replies to drop."""
        self._close()
        drop = np.full(self._conversations, DedupPlan.EXACT, dtype=np.int8)
        for records in self._exact:
            order, starts = _first_of_groups(records["item"], records["key"])
            drop[records["item"][order[starts]]] = DedupPlan.KEEP
        if near and self._conversations > 1:
            self._near_duplicates(drop, threshold)
        return DedupPlan(drop=drop, reply_over_cap=self._macro_copies(drop, max_macro_copies))

    def _near_duplicates(self, drop: np.ndarray, threshold: float) -> None:
        """Mark alive conversations similar enough to an earlier alive one that shares an LSH band with them."""
        alive = drop == DedupPlan.KEEP
        duplicate = np.zeros(len(drop), dtype=bool)
        for records in self._bands:
            records = records[alive[records["item"]]]
            order, starts = _first_of_groups(records["item"], records["key"], records["group"])
            first = np.repeat(order[starts], np.diff(np.r_[starts, len(order)]))
            candidates = np.flatnonzero(first != order)
            later, earlier = records["item"][order[candidates]], records["item"][first[candidates]]
            for start in range(0, len(later), _SIMILARITY_CHUNK):
                pair_later, pair_earlier = later[start : start + _SIMILARITY_CHUNK], earlier[start : start + _SIMILARITY_CHUNK]
                needed = np.unique(np.r_[pair_later, pair_earlier])
                signatures = _signature_rows(self._signature_path, needed, len(drop))
                same = signatures[np.searchsorted(needed, pair_later)] == signatures[np.searchsorted(needed, pair_earlier)]
                duplicate[pair_later[same.mean(axis=1) >= threshold]] = True
        drop[duplicate] = DedupPlan.NEAR

    def _macro_copies(self, drop: np.ndarray, cap: int) -> np.ndarray:
        over = np.zeros(self._reply_count, dtype=bool)
        for records in self._replies:
            records = records[drop[records["owner"]] == DedupPlan.KEEP]
            order, starts = _first_of_groups(records["item"], records["key"])
            rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
            over[records["item"][order[rank >= cap]]] = True  # within one text, earlier replies come first
        return over
