"""Dataset import from CSV, JSONL or Parquet, of any size: all rows or none, in memory that does not grow with
the file.

The file is read and validated in chunks (services/import_reading.py) and each chunk is written to staging
tables (db/import_staging.py: temporary tables, COPY on Postgres, executemany on SQLite); then the split is
drawn, and one switch moves every new row into `samples` with its labels. Nothing is visible before the switch
commits, and a bad row, an error or a killed process before it leaves nothing: temporary tables die with their
connection.

Why a staging table and one switch rather than one long transaction: on SQLite a writing transaction holds the
database's only write lock from its first statement, so reading, validating and splitting a million rows inside
it would stop every annotator's decision for minutes. Staging writes touch the connection's private temporary
tables only and take no lock on the shared database; the write lock is held for the switch alone (two
INSERT … SELECT statements). On Postgres either would do (MVCC hides the rows until commit and takes no table
lock); the same path serves both.

Exact (normalised) duplicates are reported and skipped. Near-duplicate groups (core/near_duplicates.py) that span
splits are reported, and kept in one split when augloop draws the split. Into an existing dataset, a new row is
also checked against the texts already there, by the leak guard's measure and thresholds (services/leak_guard.py):
a new train row near a val/test text, or a new val/test row near a train original, is reported, and when augloop
draws the split it takes that text's split (with its near-duplicates of the file), so that a second file's
retweet of a test text does not train.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from core.errors import ConcurrentChange, ConflictError, NotFoundError, PermissionDenied, ValidationFailed
from core.names import check_display_name, check_language, check_slug, label_name_problem
from core.near_duplicates import NearDuplicateFinder
from core.textnorm import content_hash, unstorable
from db import import_staging as staging
from db.datasets import lock_dataset
from db.models import DEFAULT_PROJECT, Dataset, Project, Role, Split, User, utcnow
from services import leak_guard
from services.exporting import RESERVED_COLUMNS
from services.import_reading import (
    DEFAULT_SPLIT_COL,
    ImportRejected,
    ImportSpec,
    RowValidator,
    declared_label,
    detect_format,
    record_chunks,
)
from trainer.config import MAX_NAMED_TASKS, SEED_MAX

__all__ = ["ImportRejected", "ImportResult", "ImportSpec", "import_file", "import_path", "import_stream"]

REPORTED = 1000  # duplicates and near-duplicate groups listed in a result (all are counted)
SPLITS = (Split.train.value, Split.val.value, Split.test.value)

ProgressFn = Callable[..., None]  # progress(phase=, done=, total=, rows=)
FinishFn = Callable[[Session, dict[str, Any]], None]


@dataclass
class ImportResult:
    dataset: str
    created_dataset: bool
    imported: int
    duplicates: list[dict[str, Any]]  # the first REPORTED
    split_counts: dict[str, int]
    split_info: dict[str, Any]
    duplicates_skipped: int = 0
    # Of those, rows whose text the dataset holds as a variant, submitted text or pseudo-label (pending, approved
    # or rejected), not as an original: the file's row, split and labels are not imported (the text keeps its
    # review), which an admin importing trusted data must hear of.
    duplicates_of_reviewed_samples: int = 0
    # Near-duplicate groups (core/near_duplicates.py) whose members sit in different splits: [{"lines", "splits"}]
    near_duplicates_across_splits: list[dict[str, Any]] = field(default_factory=list)  # the first REPORTED
    near_duplicate_groups_across_splits: int = 0
    # New rows near a text the dataset already holds in another split, train against val/test:
    # [{"line", "split", "near_sample", "near_split", "moved"}]; "moved": the drawn split became near_split
    near_existing_across_splits: list[dict[str, Any]] = field(default_factory=list)  # the first REPORTED
    near_existing_across_splits_count: int = 0
    # What the user should look at before training: repeated rows whose labels disagree (skipped, the first
    # kept), and (import_warnings) an empty val or test split, classes no val or test text has, labels that look
    # like missing values or differ only in case.
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "created_dataset": self.created_dataset,
            "imported": self.imported,
            "duplicates_skipped": self.duplicates_skipped,
            "duplicates_of_reviewed_samples": self.duplicates_of_reviewed_samples,
            "duplicates": self.duplicates[:REPORTED],
            "split_counts": self.split_counts,
            "split_info": self.split_info,
            "near_duplicate_groups_across_splits": self.near_duplicate_groups_across_splits,
            "near_duplicates_across_splits": self.near_duplicates_across_splits[:REPORTED],
            "near_existing_across_splits_count": self.near_existing_across_splits_count,
            "near_existing_across_splits": self.near_existing_across_splits[:REPORTED],
            "warnings": self.warnings,
        }


# Cells that spreadsheets and data tools write for a missing value: read as labels, each became a class of its own.
MISSING_LIKE = {"na", "n/a", "n.a.", "#n/a", "nan", "null", "none", "nil", "-", "--", "?"}


# A class with fewer val (or test) texts than this has a per-class F1 there that one text swings by more than
# 1/FEW_TO_MEASURE of its recall: the import says so (a rare class of 25 texts drew 1 test text, scored F1 1.0).
FEW_TO_MEASURE = 5


def import_warnings(session: Session, dataset: Dataset, split_info: dict[str, Any]) -> list[str]:
    """What the dataset, as this import leaves it, holds that its user should look at before training: a task
    with no labelled val or test original (training needs val; a drawn split may leave them empty when
    near-duplicate texts, such as posts sharing a long footer, form large groups kept in one split), classes no
    val or test text has (their F1 is not measured, and macro-F1 averages over the classes present), classes with
    fewer than FEW_TO_MEASURE val or test texts (their F1 there is mostly noise), classes no
    train text has (declared with the labels, or only in val/test), labels that look like missing values, and
    labels that differ only in case or spacing."""
    from db.datasets import view_label_counts

    counts: dict[str, dict[str, dict[str, int]]] = {}
    for task, split, label, n in view_label_counts(session, dataset, {"original"}, {"train", "val", "test"}):
        counts.setdefault(task, {}).setdefault(split, {})[label] = n
    drawn = split_info.get("source") == "stratified"
    out: list[str] = []
    for task in dataset.task_names():
        by_split = counts.get(task, {})
        trained = set(by_split.get("train", {}))
        for split in ("val", "test"):
            held = by_split.get(split, {})
            if not held:
                why = ""
                if drawn and split_info.get("largest_group_rows"):
                    why = (
                        f" augloop drew the split and kept near-duplicate texts together: the largest group holds"
                        f" {split_info['largest_group_rows']:,} rows (texts sharing long boilerplate, a signature or"
                        " a footer, look alike: strip it before importing)."
                    )
                out.append(f"task {task!r} has no labelled {split} text: training needs val, and test scores it.{why}")
                continue
            missing = sorted(trained - set(held))
            if missing:
                out.append(
                    f"task {task!r}: {len(missing)} class(es) that train has are in no {split} text, so their F1 is"
                    f" not measured there: {', '.join(repr(m) for m in missing[:10])}"
                )
            thin = sorted(label for label, n in held.items() if 0 < n < FEW_TO_MEASURE)
            if thin:
                out.append(
                    f"task {task!r}: {len(thin)} class(es) have fewer than {FEW_TO_MEASURE} {split} texts, so one text"
                    f" moves their {split} recall by more than {100 // FEW_TO_MEASURE} points and their F1 there is"
                    f" mostly noise: {', '.join(f'{label!r} ({held[label]})' for label in thin[:10])}"
                )
        untrained = [label for label in dataset.labels_of(task) if label not in trained]
        if not trained and any(by_split.values()):  # a file that is one split (dev.csv): said once, not per class
            out.append(
                f"task {task!r} has no labelled train text yet: no model can learn it; import the train split too "
                f"(augloop import train.csv -d {dataset.name} {' '.join(f'-t {t}' for t in dataset.task_names())} "
                "--split train)"
            )
        elif untrained and trained:
            out.append(
                f"task {task!r}: {len(untrained)} class(es) no train text has, so no model learns them and no"
                f" augmenter has a text to vary: {', '.join(repr(m) for m in untrained[:10])}"
            )
        labels = sorted({label for split in by_split.values() for label in split})
        missing_like = [label for label in labels if label.strip().lower() in MISSING_LIKE]
        if missing_like:
            out.append(
                f"task {task!r}: label(s) {', '.join(repr(m) for m in missing_like)} look like missing values but"
                " are classes; leave such cells empty if the label is unknown"
            )
        folded: dict[str, list[str]] = {}
        for label in labels:
            folded.setdefault(" ".join(label.casefold().split()), []).append(label)
        alike = [names for names in folded.values() if len(names) > 1]
        if alike:
            shown = "; ".join(" / ".join(repr(n) for n in names) for names in alike[:10])
            out.append(
                f"task {task!r}: labels that differ only in case or spacing are separate classes: {shown} (an admin"
                f" merges one into another with augloop labels rename DATASET OLD NEW --task {task})"
            )
    return out


def stratified_split(
    strata: Sequence[str], seed: int, fractions: tuple[float, float, float], together: list[list[int]] | None = None
) -> list[str]:
    """A split per row, stratified by `strata` (one task's label per row, "" when missing), reproducible under
    `seed`. Each group of `together` (row indices: near-duplicates) is drawn as one unit, by its first member's
    stratum, and all its members get that unit's split: a retweet never sits in train while its tweet is in
    test.

    Val and test get their share of all the units (the fraction of the total, rounded), handed to the strata in
    proportion with the largest remainders first (ties drawn by `seed`): rounding each stratum alone gave a class
    of four rows no val row, and a file of many small classes no val or test at all. A class keeps at least one
    unit in train (unless the train fraction is 0)."""
    follower_of = {i: members[0] for members in together or [] for i in members[1:]}
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(strata):
        if i not in follower_of:
            by_stratum[key].append(i)
    split: list[str] = [Split.train.value] * len(strata)
    rng = random.Random(seed)
    keys = sorted(by_stratum)
    for key in keys:
        rng.shuffle(by_stratum[key])
    sizes = [len(by_stratum[key]) for key in keys]
    kept = 1 if fractions[0] > 0 else 0  # a class keeps a unit in train, unless the file is all val/test
    n_val = _apportion(sizes, fractions[1], [max(0, n - kept) for n in sizes], rng)
    n_test = _apportion(sizes, fractions[2], [max(0, n - kept) - v for n, v in zip(sizes, n_val, strict=True)], rng)
    for key, v, t in zip(keys, n_val, n_test, strict=True):
        for k, i in enumerate(by_stratum[key][: v + t]):
            split[i] = Split.val.value if k < v else Split.test.value
    for i, first in follower_of.items():
        split[i] = split[first]
    return split


def _apportion(sizes: list[int], fraction: float, caps: list[int], rng: random.Random) -> list[int]:
    """About size × fraction units of each stratum, at most its cap, round(their sum) in all: the floors first,
    then one more to the strata with the largest remainders (largest remainder method; ties drawn by `rng`). A
    stratum whose cap is below its share (a class of one row keeps it in train) gives up the rest of it: its
    shortfall is not loaded onto the others."""
    wanted = [min(n * fraction, cap) for n, cap in zip(sizes, caps, strict=True)]
    counts = [int(w) for w in wanted]
    ties = [rng.random() for _ in sizes]
    owed = round(sum(wanted)) - sum(counts)
    # a fractional share lies below its cap (a cap is a whole number), so each of these may take one more
    for k in sorted(range(len(sizes)), key=lambda k: (counts[k] - wanted[k], ties[k]))[: max(0, owed)]:
        if counts[k] < caps[k]:
            counts[k] += 1
    return counts


class _Staged:
    """One import on one connection: its rows in the staging tables, and per row what the split needs (line,
    stratum, split from the file), in compact arrays."""

    def __init__(
        self,
        conn: Connection,
        spec: ImportSpec,
        known: dict[str, list[str]] | None,
        batch: Callable[[], AbstractContextManager[Any]],
        progress: ProgressFn,
        undeclared: Sequence[str] = (),
    ) -> None:
        self.conn = conn
        self.spec = spec
        self.batch = batch
        self.progress = progress
        self.known = None if known is None else {t: list(v) for t, v in known.items()}  # as the rows were read
        self.validator = RowValidator(spec, known, undeclared)
        # The leak guard's measure and thresholds: the groups a file's split must not cut are the near-copies
        # the augment filter and the training view would call leaks.
        self.finder = NearDuplicateFinder(
            n=leak_guard.NGRAM, jaccard=leak_guard.JACCARD, containment=leak_guard.CONTAINMENT
        )
        self.lines: list[np.ndarray] = []
        self.strata: list[str] = []  # the first task's label per row, "" when missing (few distinct strings)
        self.file_splits: list[str | None] = []
        self.groups: list[list[int]] = []  # near-duplicate groups of the file (row seqs)
        self.drawn = False  # whether augloop drew the split (else the file gave it)
        self.count = 0

    def read(self, stream: BinaryIO, fmt: str, total_bytes: int) -> None:
        stratify = self.spec.tasks[0]
        interned: dict[str, str] = {}
        self.validator.sparse = fmt == "jsonl"
        self.validator.guarded = fmt == "csv"
        for records in record_chunks(stream, fmt):
            rows = self.validator.validate(records)
            start = self.count
            with self.batch():
                staging.add_rows(
                    self.conn,
                    [
                        (start + i, r.line, r.text, content_hash(r.text), r.external_id, r.split)
                        for i, r in enumerate(rows)
                    ],
                    [(start + i, task, label) for i, r in enumerate(rows) for task, label in r.labels.items()],
                )
            self.finder.add([r.text for r in rows])
            self.lines.append(np.fromiter((r.line for r in rows), dtype=np.int64, count=len(rows)))
            label = (r.labels.get(stratify, "") for r in rows)
            self.strata.extend(interned.setdefault(v, v) for v in label)
            self.file_splits.extend(r.split for r in rows)  # the few constant strings of SPLIT_ALIASES
            self.count += len(rows)
            self.progress(phase="reading", done=_position(stream, total_bytes), total=total_bytes, rows=self.count)
        if not self.count:
            if self.validator.not_originals:
                raise ImportRejected(
                    1,
                    f"no originals: the file is an augloop export whose {self.validator.not_originals} rows were "
                    "all variants, submitted texts or pseudo-labels there (origin); an import adds originals",
                )
            raise ImportRejected(1, "no data rows")
        self.validator.finish()

    def plan_split(self) -> tuple[list[str], dict[str, Any], list[dict[str, Any]], int]:
        """The split of every row, how it was obtained, and the near-duplicate groups that span splits."""
        self.progress(phase="near-duplicate candidates", done=0, total=self.count, rows=self.count)

        def searched(done: int, total: int) -> None:  # the texts' prefix anchors probed (13 s at 300,000 rows)
            self.progress(phase="near-duplicate candidates", done=done, total=total, rows=self.count)

        def checked(done: int, total: int) -> None:  # candidate pairs, not rows: the bar moves as they are read
            self.progress(phase="near-duplicates", done=done, total=total, rows=self.count)

        with self.batch():
            groups = self.finder.groups(
                lambda ids: staging.texts_of(self.conn, ids.tolist()), progress=checked, searching=searched
            )
        self.groups = [[int(i) for i in members] for members in groups]
        self.drawn = not self.validator.use_split
        splits: list[str]
        if self.spec.split is not None:
            splits = [s or "" for s in self.file_splits]
            info: dict[str, Any] = {"source": "given", "split": self.spec.split}
        elif self.validator.use_split:
            splits = [s or "" for s in self.file_splits]
            info = {"source": "column", "column": self.spec.split_col}
        else:
            splits = stratified_split(self.strata, self.spec.split_seed, self.spec.split_fractions, together=groups)
            info = {
                "source": "stratified",
                "seed": self.spec.split_seed,
                "stratified_by": self.spec.tasks[0],
                "fractions": list(self.spec.split_fractions),
                "near_duplicates_kept_together": len(groups),
                "largest_group_rows": max((len(g) for g in groups), default=0),
            }
            with self.batch():
                staging.add_splits(self.conn, range(self.count), splits)
        lines = np.concatenate(self.lines)
        across = [
            {"lines": lines[members].tolist(), "splits": [splits[i] for i in members]}
            for members in groups
            if len({splits[i] for i in members}) > 1
        ]
        with self.batch():
            staging.link_duplicates(self.conn)
        return splits, info, across[:REPORTED], len(across)

    def near_existing(self, session: Session, dataset: Dataset) -> tuple[list[dict[str, Any]], int]:
        """New rows near a text `dataset` already holds on the other side of the train/eval line: a new train
        row near a val/test text, a new val/test row near a train original (the leak guard's measure and
        thresholds). When augloop drew the split, such a row takes that text's split, and so do its
        near-duplicates of the file. Returns the first REPORTED pairs and their count."""
        from core.near_duplicates import ReferenceIndex
        from db.augmentation import train_original_rows
        from services import leak_guard

        train = Split.train.value
        pairs: list[dict[str, Any]] = []
        moves: dict[int, str] = {}
        evaluation: list[tuple[int, int, str]] = []  # (seq, line, split) of new val/test rows
        self.progress(phase="near-duplicates of the dataset", done=0, total=self.count, rows=self.count)
        staging.link_existing(self.conn, dataset.id)  # rows whose text it holds are skipped, not near it
        read = 0
        for chunk in staging.new_rows(self.conn):
            read += len(chunk)
            new_train = [row for row in chunk if row[3] == train]
            evaluation.extend((seq, line, split) for seq, line, _, split in chunk if split != train)
            found = leak_guard.leaks(session, dataset, [text for _, _, text, _ in new_train])
            for (seq, line, _, split), leak in zip(new_train, found, strict=True):
                if leak is not None:
                    pairs.append(
                        {"line": line, "split": split, "near_sample": leak.sample_id, "near_split": leak.split}
                    )
                    moves[seq] = leak.split
            self.progress(phase="near-duplicates of the dataset", done=read, total=self.count, rows=self.count)
        if read < self.count:  # the rest repeat a text of the file or the dataset: skipped, nothing to check
            self.progress(phase="near-duplicates of the dataset", done=self.count, total=self.count, rows=self.count)
        if evaluation:  # the dataset's train originals against an index of the new val/test rows
            seqs = [seq for seq, _, _ in evaluation]
            index = ReferenceIndex(
                min(leak_guard.JACCARD, leak_guard.CONTAINMENT),
                n=leak_guard.NGRAM,
                texts_of=lambda positions: staging.texts_of(self.conn, [seqs[p] for p in positions.tolist()]),
            ).fit(text for chunk in staging.new_rows(self.conn) for _, _, text, split in chunk if split != train)
            batch: list[tuple[int, str]] = []
            for row in chain(train_original_rows(session, dataset.id), [None]):  # None: the last batch's turn
                if row is not None:
                    batch.append(row)
                if batch and (row is None or len(batch) == leak_guard.CHECK_BATCH):
                    texts = [text for _, text in batch]
                    vectors, sizes = index.ngrams.vectors(texts)
                    best = index.best(texts, vectors, sizes)
                    for i, (sample_id, _) in enumerate(batch):
                        jaccard, containment = best.jaccard[i], best.containment[i]
                        if (ref := best.same_words(i)) < 0:  # the same words first, as the leak guard does
                            if jaccard < leak_guard.JACCARD and containment < leak_guard.CONTAINMENT:
                                continue
                            ref = int(best.jaccard_ref[i] if jaccard >= leak_guard.JACCARD else best.containment_ref[i])
                        seq, line, split = evaluation[ref]
                        if seq not in moves:
                            pairs.append({"line": line, "split": split, "near_sample": sample_id, "near_split": train})
                            moves[seq] = train
                    batch = []
        for pair in pairs:
            pair["moved"] = self.drawn
        if self.drawn and moves:
            group_of = {seq: members for members in self.groups for seq in members}
            staging.move_splits(
                self.conn, {member: split for seq, split in moves.items() for member in group_of.get(seq, [seq])}
            )
        pairs.sort(key=lambda pair: pair["line"])
        return pairs[:REPORTED], len(pairs)

    def switch(
        self, session: Session, dataset: Dataset | None, split_info: dict[str, Any], created_by: int | None
    ) -> tuple[Dataset, ImportResult]:
        """Inside the caller's transaction: create the dataset if new, move the new rows into it."""
        check_importer(session, created_by)
        self.progress(phase="writing", done=0, total=self.count, rows=self.count)
        created = dataset is None
        if dataset is None:
            # A task given no label set takes the file's labels in code-point order (Python's, as SQLite's binary
            # collation sorts them): the order is the classes' ids, and Postgres's ORDER BY follows the database's
            # collation (ICU en-US put "_x" before "-1" and "a b" before "Neutral"), so the same file got other
            # ids on another backend.
            seen = staging.label_sets(self.conn)
            tasks = [
                {"name": t, "labels": list(self.spec.label_order.get(t) or sorted(seen.get(t, [])))}
                for t in self.spec.tasks
            ]
            display = check_display_name(self.spec.display_name or self.spec.dataset, field="display_name")
            dataset = Dataset(
                name=self.spec.dataset,
                display_name=display,
                project_id=_project_id(session, self.spec),
                language=self.spec.language or "en",
                tasks=tasks,
                split_info=split_info,
            )
            session.add(dataset)
            session.flush()
        else:
            # Two imports into one dataset take turns (Postgres; SQLite has one writer): the second sees the first's
            # rows as duplicates instead of failing on their content hashes, and its rows get their ids only after
            # the first committed, so a dataset's ids grow in the order they become visible (the leak guard's
            # freshness key, the largest val and test id, relies on it).
            if not lock_dataset(session, dataset.id):
                raise ConflictError(
                    f"dataset {self.spec.dataset!r} was deleted while the file was being imported; nothing was "
                    "imported",
                    field="name",
                )
            # the rows were read against the label sets as they were; a rename committed meanwhile (Postgres: it
            # held the lock this waited for) would leave them under a class the task no longer has
            session.refresh(dataset)
            if self.known is not None and {t: dataset.labels_of(t) for t in self.known} != self.known:
                raise ConcurrentChange(
                    f"dataset {self.spec.dataset!r} was given other labels while the file was being imported; "
                    "nothing was imported: import it again (a queued import retries by itself)",
                    field="name",
                )
            staging.link_existing(self.conn, dataset.id)
        skipped, of_reviewed, duplicates = staging.duplicates(self.conn, REPORTED)
        conflicts, conflicting = staging.label_conflicts(self.conn, 10)
        relabels, relabelling = staging.existing_label_conflicts(self.conn, 10)
        resplits, resplitting = staging.split_conflicts(self.conn, 10)
        id_repeats, repeating, id_clashes, clashing = staging.id_repeats(self.conn, None if created else dataset.id, 10)
        split_counts = staging.split_counts(self.conn)
        imported = staging.insert_samples(self.conn, dataset.id, created_by, utcnow())
        self.progress(phase="writing", done=self.count, total=self.count, rows=self.count)
        result = ImportResult(
            dataset=dataset.name,
            created_dataset=created,
            imported=imported,
            duplicates=duplicates,
            duplicates_skipped=skipped,
            duplicates_of_reviewed_samples=of_reviewed,
            split_counts=split_counts,
            split_info=split_info,
        )
        if conflicts:  # annotators who disagreed: the first row's labels were kept, the disagreement said
            shown = "; ".join(
                f"line {c['line']} repeats line {c['duplicate_of_line']} with {c['task']} {c['label']!r}"
                f" (kept: {'none' if c['kept'] is None else repr(c['kept'])})"
                for c in conflicting
            )
            result.warnings.append(
                f"{conflicts} row(s) repeat an earlier row's text{SAME_TEXT} with other labels and were skipped, "
                f"the earlier row's labels kept: {shown}"
            )
        if self.validator.export:  # services/import_reading.py EXPORT_SIGNATURE
            said = []
            if self.validator.id_col != self.spec.id_col:
                said.append("its ids were read from `external_id` (its `id` was the exporting server's sample id)")
            if self.validator.not_originals:
                said.append(
                    f"{self.validator.not_originals} row(s) that were no original there (origin: a variant, a "
                    "submitted text or a pseudo-label, whatever their review) were left out: an import adds "
                    "originals, which train as they are"
                )
            if created and (lost := _not_carried_by_an_export(self.spec, dataset)):
                said.append(lost)
            if said:
                result.warnings.append(f"the file is an augloop export: {'; '.join(said)}")
        if resplits:  # a file that moves texts between splits: an import adds texts, it moves none
            shown = "; ".join(
                f"line {c['line']} ({c['split']}) repeats "
                + (f"sample {c['sample']}" if "sample" in c else f"line {c['first_line']}")
                + f" ({c['kept']})"
                for c in resplitting
            )
            result.warnings.append(
                f"{resplits} row(s) repeat a text{SAME_TEXT} with another split and were skipped, the text kept in "
                f"its split (an import adds texts, it moves no stored text between splits): {shown}"
            )
        if relabels:  # a file of corrected labels: an import adds texts, it changes no stored sample
            shown = "; ".join(
                f"line {c['line']} ({c['task']} {c['label']!r}) repeats sample {c['sample']}"
                f" ({'no label' if c['kept'] is None else repr(c['kept'])})"
                for c in relabelling
            )
            result.warnings.append(
                f"{relabels} row(s) repeat a text the dataset holds{SAME_TEXT} with other labels and were skipped, "
                f"the stored labels kept (an import adds texts, it does not change a stored sample's labels): {shown}"
            )
        if self.drawn and self.validator.split_like:  # a split column under another name: most likely meant
            named = self.validator.split_like
            result.warnings.append(
                f"augloop drew the split (stratified by {self.spec.tasks[0]!r}), but column {named[0]!r} names a split"
                f" (train, val/dev, test) on every row: to keep the file's split, import it with split_col"
                f" {named[0]!r} (augloop import --split-col {named[0]})"
            )
        if id_repeats or id_clashes:  # ids name texts: a join back to the file or an export must find one text
            result.warnings.append(_id_warning(self.validator.id_col, id_repeats, repeating, id_clashes, clashing))
        return dataset, result


def _id_warning(
    column: str | None, repeats: int, repeating: list[dict[str, Any]], clashes: int, clashing: list[dict[str, Any]]
) -> str:
    """What an import says of ids that name more than one text (imported all the same: an id is the file's, not
    augloop's; but a join by id, to the file or to an export, finds two texts)."""
    said = []
    if repeats:
        shown = "; ".join(f"line {c['line']} repeats line {c['first_line']}'s id {c['id']!r}" for c in repeating)
        said.append(f"{repeats} row(s) have the id of another row of the file with another text: {shown}")
    if clashes:
        shown = "; ".join(f"line {c['line']} has sample {c['sample']}'s id {c['id']!r}" for c in clashing)
        said.append(f"{clashes} row(s) have the id of a text the dataset already holds: {shown}")
    return (
        f"ids in column {column!r} that name more than one text (imported all the same; a join by id, to the file "
        f"or to an export, would find two texts): {'; and '.join(said)}"
    )


def _position(stream: BinaryIO, total: int) -> int:
    try:
        return min(stream.tell(), total)
    except (OSError, ValueError):
        return 0


def _size(stream: BinaryIO) -> int:
    try:
        here = stream.tell()
        end = stream.seek(0, 2)
        stream.seek(here)
        return int(end)
    except (OSError, ValueError):
        return 0


FORMAT_PROBE_BYTES = 256 * 1024  # a first JSON Lines record of the longest text allowed fits


def _format_of(stream: BinaryIO, filename: str | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    here = stream.tell()
    head = stream.read(FORMAT_PROBE_BYTES)
    stream.seek(here)
    return detect_format(filename, head)


def check_target(session: Session, spec: ImportSpec) -> tuple[Dataset | None, dict[str, list[str]] | None]:
    """The dataset the file goes into (None: a new one, whose names and project are valid) and its label sets,
    once the file's tasks fit it: what an import checks before it reads a byte of the file."""
    _check_spec_strings(spec)
    if not spec.tasks:
        raise ValidationFailed("declare at least one task (a label column)", field="task")
    _check_tasks(spec)
    dataset = session.scalar(select(Dataset).where(Dataset.name == spec.dataset))
    if dataset is None:  # a new dataset: its names and project are checked before the file is read
        _check_new_tasks(spec)
        check_slug(spec.dataset, field="name", what="a dataset name")
        check_display_name(spec.display_name or spec.dataset, field="display_name")
        _project_id(session, spec)
        return None, None
    if spec.project is not None and spec.project != dataset.project.name:
        raise ValidationFailed(
            f"dataset {spec.dataset!r} is in project {dataset.project.name!r}, not {spec.project!r}; an import "
            "adds to a dataset where it is (leave the project out)",
            field="project",
        )
    # What only a new dataset takes from an import: given for an existing one, it must say what the dataset is
    # (a different one was ignored unsaid: a file of German texts imported with --language de into an English
    # dataset, a display name that never showed). PATCH /datasets/{name} changes them.
    for key, given, stored in (
        ("language", spec.language, dataset.language),
        ("display_name", (spec.display_name or "").strip() or None, dataset.display_name),  # blank: not given
    ):
        if given is not None and given != stored:
            raise ValidationFailed(
                f"dataset {spec.dataset!r} has {key} {stored!r}, not {given!r}; an import adds to a dataset as it "
                f"is (leave {key} out, or change it with PATCH /datasets/{spec.dataset})",
                field=key,
            )
    unknown = [t for t in spec.tasks if t not in dataset.task_names()]
    if unknown:
        raise ValidationFailed(
            f"dataset {spec.dataset!r} has tasks {dataset.task_names()}; unknown task(s) {unknown}", field="task"
        )
    known = {t: dataset.labels_of(t) for t in spec.tasks}
    for task, names in spec.label_order.items():  # the stored set (and its order, the classes' ids) stays
        # declared labels are read stripped and in NFC; a set stored before either may spell a name otherwise
        if names != [declared_label(n) for n in known[task]]:
            give = "leave labels out, or give that set" if known[task] else "leave labels out"
            raise ValidationFailed(
                f"labels: task {task!r} of dataset {spec.dataset!r} has the label set {known[task]} since its first "
                f"import, not {names}; an import adds to it as it is ({give})",
                field="labels",
            )
    return dataset, known


def _not_carried_by_an_export(spec: ImportSpec, dataset: Dataset) -> str | None:
    """What a new dataset imported from an augloop export took by default that the exporting dataset may have had
    otherwise: an export holds rows, not its dataset's label sets (their order is the classes' ids; a class no row
    holds is not in it) or language. None when the import gave them all."""
    unordered = [task for task in spec.tasks if task not in spec.label_order]
    if not unordered and spec.language is not None:
        return None
    took = []
    if unordered:
        took.append(
            f"task(s) {', '.join(repr(t) for t in unordered)} took the labels the file holds, sorted, as their classes"
            " and their ids"
        )
    if spec.language is None:
        took.append(f"the language is {dataset.language!r}")
    example = unordered[0] if unordered else "TASK"
    return (
        "it holds rows, not the exporting dataset's label sets (their order is the classes' ids, and a class no row "
        f"holds is left out) or its language: {' and '.join(took)}; to keep another dataset's class ids, delete this "
        f"one and import the file again with each task's label set in its order and the language (CLI: --labels "
        f"{example}=a,b,c --language xx, which `augloop export` prints whole; API: the labels and language fields)"
    )


def _undeclared(dataset: Dataset | None, spec: ImportSpec) -> list[str]:
    """The tasks of the dataset the file goes into that the import does not declare."""
    return [] if dataset is None else [t for t in dataset.task_names() if t not in spec.tasks]


def _check_tasks(spec: ImportSpec) -> None:
    """Each task once, none of them the text, split or id column, and each declared label set (labels=) for a
    declared task with distinct, non-blank names: a label named twice would become two classes of which only one
    ever trains, and macro-F1 would average in the other."""
    if len(spec.tasks) > MAX_NAMED_TASKS:  # no run could train them (30,000 columns took 27 s, a 6 MB answer)
        raise ValidationFailed(
            f"{len(spec.tasks)} tasks declared; a dataset has at most {MAX_NAMED_TASKS}, as many as a run trains",
            field="task",
        )
    seen: set[str] = set()
    for task in spec.tasks:
        if task in seen:
            raise ValidationFailed(f"task {task!r} is declared twice", field="task")
        seen.add(task)
    for role, col in (("text", spec.text_col), ("split", spec.split_col), ("id", spec.id_col)):
        if col in seen:
            raise ValidationFailed(
                f"task {col!r} is the file's {role} column ({role}_col); a task is a label column of its own",
                field="task",
            )
    for task, names in spec.label_order.items():
        if task not in seen:
            raise ValidationFailed(
                f"labels: task {task!r} is not among the declared tasks {spec.tasks}", field="labels"
            )
        if not names:  # every row's label would then be unknown
            raise ValidationFailed(f"labels: task {task!r} declares no label name", field="labels")
        if any(not name.strip() for name in names):
            raise ValidationFailed(f"labels: task {task!r} has a blank label name", field="labels")
        twice = sorted(name for name, n in Counter(names).items() if n > 1)
        if twice:
            raise ValidationFailed(f"labels: task {task!r} names {twice} more than once", field="labels")


def _check_new_tasks(spec: ImportSpec) -> None:
    """A new dataset's task names leave the export's own columns free (services/exporting.py): a task called
    `origin` or `split` would have its labels written over there."""
    taken = [task for task in spec.tasks if task in RESERVED_COLUMNS]
    if taken:
        raise ValidationFailed(
            f"task name(s) {taken} are taken by the columns augloop adds to an export ({', '.join(RESERVED_COLUMNS)});"
            " rename the label column in the file",
            field="task",
        )


def _check_spec_strings(spec: ImportSpec) -> None:
    """An import's names (form fields, CLI options) hold no NUL (Postgres refuses one, naming no field) and its
    language is a language tag (core/names), before anything is read or stored."""
    named: list[tuple[str, str | None]] = [
        ("name", spec.dataset),
        ("text_col", spec.text_col),
        ("split_col", spec.split_col),
        ("id_col", spec.id_col),
        ("language", spec.language),
        ("project", spec.project),
        ("display_name", spec.display_name),
        *(("task", task) for task in spec.tasks),
        *(("labels", name) for task, names in spec.label_order.items() for name in [task, *names]),
    ]
    for name, value in named:
        if value is not None and (problem := unstorable(value)):
            raise ValidationFailed(f"{name}: {problem}", field=name)
        if name in ("task", "labels") and value is not None and (problem := label_name_problem(value)):
            raise ValidationFailed(f"{name}: {value[:60]!r} {problem}", field=name)
    if spec.language is not None:
        check_language(spec.language, field="language")
    if spec.split is not None and spec.split not in SPLITS:
        raise ValidationFailed(
            f"split: {spec.split[:60]!r} is no split; every row's split is train, val or test (or dev, validation, …)",
            field="split",
        )
    if spec.split is not None and spec.split_col not in (None, DEFAULT_SPLIT_COL):
        raise ValidationFailed(
            f"split and split_col both given ({spec.split!r}, {spec.split_col!r}): every row's split, or the column "
            "that holds each row's, not both",
            field="split",
        )
    if not 0 <= spec.split_seed <= SEED_MAX:
        raise ValidationFailed(
            f"split_seed must be 0 to {SEED_MAX} (as every seed); got {spec.split_seed}", field="split_seed"
        )


def _project_id(session: Session, spec: ImportSpec) -> int:
    name = spec.project or DEFAULT_PROJECT
    project_id = session.scalar(select(Project.id).where(Project.name == name))
    if project_id is None:
        raise NotFoundError(f"project {name!r} not found", field="project")
    return project_id


def _unchanged(session: Session, spec: ImportSpec, before: tuple[int, Any] | None) -> Dataset | None:
    """The dataset as the switch finds it: the one the file was validated against (id, tasks), or still none.
    Created or changed by another import meanwhile: ConcurrentChange (the file, read again, may fit it; a queued
    import retries). Deleted meanwhile: ConflictError, as a retry must not bring it back."""
    now = session.scalar(select(Dataset).where(Dataset.name == spec.dataset))
    if (None if now is None else (now.id, now.tasks)) == before:
        return now
    if before is not None and (now is None or now.id != before[0]):
        raise ConflictError(
            f"dataset {spec.dataset!r} was deleted while the file was being imported; nothing was imported",
            field="name",
        )
    raise ConcurrentChange(
        f"dataset {spec.dataset!r} was {'created' if before is None else 'given other labels'} while the "
        "file was being imported; nothing was imported: import it again (a queued import retries by itself)",
        field="name",
    )


# One text, for an import, whatever its case, spacing, zero-width characters and Unicode compatibility form
# (core.textnorm.content_hash, the dataset's unique key): a file's other casing of a test text would otherwise
# put it in train. Said in the warnings, where `STOP` and `stop` read as different texts.
SAME_TEXT = " (case, spacing and Unicode form aside)"


def check_importer(session: Session, created_by: int | None) -> None:
    """Only an admin's import makes originals (they train unreviewed): an import is judged by its author as they
    stand when it writes, as every writer is, not when it was queued: still an admin, and still holding an active
    token (revoking a user's tokens is how an operator removes them; users are never deleted). An admin demoted,
    or removed, after queueing an upload had it land as originals all the same (an attacker's and a reviewer's
    finds). None: the operator, from the CLI."""
    if created_by is None:
        return
    from services.tokens import has_active_token

    author = session.get(User, created_by)
    if author is None or author.role != Role.admin:
        who = "no longer exists" if author is None else f"is no longer an admin ({author.role})"
    elif not has_active_token(session, author.id):
        who = "holds no active token any more (revoked or expired)"
    else:
        return
    raise PermissionDenied(
        f"the import's author {who}: only an admin's import makes originals; nothing was imported",
        field="created_by",
    )


def _quiet(**_progress: Any) -> None:
    return None


def import_stream(
    session: Session,
    stream: BinaryIO,
    spec: ImportSpec,
    *,
    filename: str | None = None,
    fmt: str | None = None,
    created_by: int | None = None,
    progress: ProgressFn | None = None,
) -> ImportResult:
    """Import a file in the caller's transaction (the caller commits; on SQLite it holds the write lock
    throughout: for large files use import_path). Rows become trusted originals: importing is an admin's (or the
    operator's, from the CLI) act."""
    report = progress or _quiet
    dataset, known = check_target(session, spec)
    fmt = _format_of(stream, filename, fmt)
    conn = session.connection()
    staging.create(conn)
    run = _Staged(conn, spec, known, nullcontext, report, _undeclared(dataset, spec))
    run.read(stream, fmt, _size(stream))
    _, split_info, across, n_across = run.plan_split()
    near = run.near_existing(session, dataset) if dataset is not None else ([], 0)
    stored, result = run.switch(session, dataset, split_info, created_by)
    result.warnings += import_warnings(session, stored, split_info)
    staging.drop(conn)
    result.near_duplicates_across_splits, result.near_duplicate_groups_across_splits = across, n_across
    result.near_existing_across_splits, result.near_existing_across_splits_count = near
    session.flush()
    return result


def import_file(
    session: Session,
    data: bytes,
    spec: ImportSpec,
    *,
    filename: str | None = None,
    fmt: str | None = None,
    created_by: int | None = None,
) -> ImportResult:
    """import_stream over bytes held in memory (small files: tests, the demo)."""
    import io

    return import_stream(session, io.BytesIO(data), spec, filename=filename, fmt=fmt, created_by=created_by)


@contextmanager
def _own_connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        # Staging transactions begin deferred on SQLite (db/session.py): they write TEMP tables only.
        conn.execution_options(readonly=True)
        try:
            yield conn
        finally:
            try:
                if conn.in_transaction():
                    conn.rollback()
                with conn.begin():
                    staging.drop(conn)
            except Exception:  # noqa: BLE001 - a broken connection: discard it, its temporary tables go with it
                conn.invalidate()


def import_path(
    engine: Engine,
    path: Path,
    spec: ImportSpec,
    *,
    filename: str | None = None,
    fmt: str | None = None,
    created_by: int | None = None,
    progress: ProgressFn | None = None,
    finish: FinishFn | None = None,
) -> ImportResult:
    """Import a file of any size in transactions of its own: staging in short transactions that take no lock
    on the shared database, then the switch in one transaction, which also runs `finish(session, result)` (the
    import job completes there). `progress(phase=, done=, total=, rows=)` reports bytes read while reading."""
    report = progress or _quiet
    with _own_connection(engine) as conn:
        with conn.begin(), Session(bind=conn) as reading:
            dataset, known = check_target(reading, spec)
            before = None if dataset is None else (dataset.id, dataset.tasks)
            staging.create(conn)
        with path.open("rb") as stream:
            fmt = _format_of(stream, filename or path.name, fmt)
            run = _Staged(conn, spec, known, conn.begin, report, _undeclared(dataset, spec))
            run.read(stream, fmt, path.stat().st_size)
        _, split_info, across, n_across = run.plan_split()
        near: tuple[list[dict[str, Any]], int] = ([], 0)
        if before is not None:  # before the switch: the write lock is held for the switch alone
            with conn.begin(), Session(bind=conn) as reading:
                existing = reading.get(Dataset, before[0])
                if existing is not None:  # deleted meanwhile: the switch says so
                    near = run.near_existing(reading, existing)
        conn.execution_options(readonly=False)  # the switch writes: BEGIN IMMEDIATE on SQLite
        with Session(bind=conn, expire_on_commit=False) as session, session.begin():
            current = _unchanged(session, spec, before)
            stored, result = run.switch(session, current, split_info, created_by)
            result.warnings += import_warnings(session, stored, split_info)
            result.near_duplicates_across_splits, result.near_duplicate_groups_across_splits = across, n_across
            result.near_existing_across_splits, result.near_existing_across_splits_count = near
            if finish is not None:
                finish(session, result.as_dict())
    return result
