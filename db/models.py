"""SQLAlchemy 2.0 models. The schema is owned by Alembic (db/migrations); tests may use create_all."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    or_,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC everywhere; SQLite stores naive values, so re-attach UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# SQLite's AUTOINCREMENT (migration 0013): a deleted dataset's largest job, sample, review and run ids are not
# handed out again, so a client following job 5 or deciding on sample 7 at version 1 never meets another one,
# and the largest review id only grows (services/review_stats.class_needs reads it). Postgres' sequences never
# go back.
NEVER_REUSED_IDS: dict[str, Any] = {"sqlite_autoincrement": True}
# db/review_access.usefulness() as SQL: the expression of ix_samples_queue_usefulness (migration 0014).
USEFULNESS_SQL = "(coalesce(novelty, 1.0 - similarity, 0.5) * coalesce(label_consistency, 1.0))"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Role(StrEnum):
    annotator = "annotator"
    admin = "admin"
    system = "system"  # the automatic reviewer ("auto"): holds no token, signs automatic decisions


# Roles a person (a token) may hold; `system` is the automatic reviewer's alone.
TOKEN_ROLES = (Role.annotator.value, Role.admin.value)


class Split(StrEnum):
    train = "train"
    val = "val"
    test = "test"


class Origin(StrEnum):
    original = "original"  # imported by an admin: trusted, trains as it is
    submitted = "submitted"  # a text sent through the augmentation API: trains once approved in review
    augmented = "augmented"
    pseudo_label = "pseudo_label"


# What waits for review before it may train: everything but an admin's import.
REVIEWABLE_ORIGINS = (Origin.augmented.value, Origin.pseudo_label.value, Origin.submitted.value)


class ReviewStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class Decision(StrEnum):
    approve = "approve"
    reject = "reject"
    edit = "edit"  # edit then approve


# A `reviews` row with this decision withdraws its author's latest vote on the sample (an audited undo). It is
# not a Decision: no request can cast it as a vote.
UNDO = "undo"


class RejectReason(StrEnum):
    label_changed = "label_changed"
    meaning_changed = "meaning_changed"
    ungrammatical = "ungrammatical"
    wrong_language = "wrong_language"
    near_duplicate = "near_duplicate"
    other = "other"
    unspecified = "unspecified"  # a rejection whose reviewer chose no reason (never shown as a choice)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


OPEN_JOB_STATUSES = (JobStatus.queued, JobStatus.running)  # a job (or a run, an impact report) not yet ended


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tokens: Mapped[list[APIToken]] = relationship(back_populates="user")


class APIToken(Base):
    """Only the SHA-256 of a token is stored; the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell tokens apart in listings
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)

    user: Mapped[User] = relationship(back_populates="tokens")


class ProjectRole(StrEnum):
    annotator = "annotator"  # reads the project's datasets and reviews them
    lead = "lead"  # also changes its datasets' settings and guidelines, starts augmentation and training


DEFAULT_PROJECT = "default"  # made by migration 0005 for the datasets that existed; where a new one goes unless named


class Project(Base):
    """A team's space: its datasets, and the users who are its members."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # a slug
    display_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProjectMember(Base):
    __tablename__ = "project_members"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)  # the URL's slug (new names: see core.names)
    display_name: Mapped[str] = mapped_column(String(200))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"), index=True)
    project: Mapped[Project] = relationship(lazy="joined")
    language: Mapped[str] = mapped_column(String(16), default="en")
    # [{"name": "bias", "labels": ["neutral", "partisan"]}, ...]: N tasks, each with its ordered label set
    tasks: Mapped[list[Any]] = mapped_column(JSON)
    # How the split was obtained: {"source": "column"} or {"source": "stratified", "seed": 42, "by": "bias", ...}
    split_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reviews_required: Mapped[int] = mapped_column(Integer, default=1)  # k reviews decide a variant by majority
    guidelines: Mapped[str] = mapped_column(Text, default="")
    # Work sharing: pending variants are leased to the annotators who ask for work, `lease_minutes` at a time
    distribute_work: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    lease_minutes: Mapped[int] = mapped_column(Integer, default=15, server_default="15")
    # What happens to new variants (services/variant_settings.py): automatic rejection of label changes,
    # the calibrated auto-approval rule, when the protected terms were seeded.
    variant_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def project_name(self) -> str:
        return self.project.name

    def task_names(self) -> list[str]:
        return [t["name"] for t in self.tasks]

    def labels_of(self, task: str) -> list[str]:
        for t in self.tasks:
            if t["name"] == task:
                return list(t["labels"])
        raise KeyError(task)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "content_hash"),
        # The review queue: one dataset, one status, in each sort's order (db/review_access.py). The text's
        # trigram index (FTS5 on SQLite, pg_trgm on Postgres) is made by migration 0006, outside the models.
        Index("ix_samples_queue", "dataset_id", "origin", "review_status", "id"),
        Index("ix_samples_queue_family", "dataset_id", "review_status", "parent_id", "id"),
        Index("ix_samples_queue_similarity", "dataset_id", "review_status", "similarity"),
        Index("ix_samples_queue_consistency", "dataset_id", "review_status", "label_consistency"),
        # Flagged variants by consistency: the flag goes with a low score, so along the index above they come
        # all together at one end. Partial: only the flagged rows (a fifth of them in the benchmark).
        Index(
            "ix_samples_queue_flagged",
            "dataset_id",
            "review_status",
            "label_flag",
            "label_consistency",
            sqlite_where=text("label_flag IS 1"),
            postgresql_where=text("label_flag IS true"),
        ),
        Index("ix_samples_queue_semantic", "dataset_id", "review_status", "semantic_similarity"),
        # Most useful first (migration 0014): walked best first by novelty × label preservation, the expected
        # value without its class factor (db/review_access.usefulness, db/reviews.py).
        Index("ix_samples_queue_usefulness", "dataset_id", "review_status", text(USEFULNESS_SQL)),
        Index("ix_samples_dataset_split", "dataset_id", "split", "origin"),
        # A dataset's rows of one split in id order (migration 0011): what the leak guard and the augmenter read
        # their val/test and training texts by, a batch at a time after the last id, and the largest id per split
        # that tells the leak guard its index is still fresh, each a seek instead of a scan of the split.
        Index("ix_samples_split_id", "dataset_id", "split", "id"),
        NEVER_REUSED_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)  # the id column of the source file
    text: Mapped[str] = mapped_column(Text)
    split: Mapped[str] = mapped_column(String(8))
    origin: Mapped[str] = mapped_column(String(16), default=Origin.original)
    content_hash: Mapped[str] = mapped_column(String(64))

    # Variants (augmented, pseudo-labelled) only
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    method: Mapped[str | None] = mapped_column(String(40), default=None)
    method_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    model_name: Mapped[str | None] = mapped_column(String(300), default=None)
    seed: Mapped[int | None] = mapped_column(Integer, default=None)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    generated_text: Mapped[str | None] = mapped_column(Text, default=None)  # kept when an annotator edits
    scores: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Who put it into the dataset: the admin who imported it, the user who submitted it, the job's creator.
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    similarity: Mapped[float | None] = mapped_column(Float, default=None)  # to the source text, 0..1
    # Sentence-encoder cosine with the source text (the meaning kept), and 1 − the closest training text's
    # character n-gram Jaccard when the variant was made (what it adds to training).
    semantic_similarity: Mapped[float | None] = mapped_column(Float, default=None)
    novelty: Mapped[float | None] = mapped_column(Float, default=None)
    # What the automatic step did at creation: "approved", "rejected", or "audit" (it would have approved,
    # and left the variant to people to measure how often they agree).
    auto_decision: Mapped[str | None] = mapped_column(String(16), default=None)
    label_consistency: Mapped[float | None] = mapped_column(Float, default=None)  # model p(intended labels)
    label_flag: Mapped[bool | None] = mapped_column(Boolean, default=None)  # model predicts another label
    review_status: Mapped[str | None] = mapped_column(String(16), default=None)  # None for originals
    review_count: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)  # optimistic locking

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    labels_rows: Mapped[list[SampleLabel]] = relationship(
        back_populates="sample", cascade="all, delete-orphan", lazy="selectin"
    )
    parent: Mapped[Sample | None] = relationship(remote_side="Sample.id")

    @property
    def labels(self) -> dict[str, str]:
        return {row.task: row.label for row in self.labels_rows}

    @hybrid_property
    def as_generated(self) -> bool:
        """Its text is the one generated (no one has rewritten it; the first edit keeps the generated text in
        `generated_text`, an undo of every edit brings it back): in Python on a row, in SQL in a query."""
        return self.generated_text is None or self.text == self.generated_text

    @as_generated.inplace.expression
    @classmethod
    def _as_generated_expression(cls) -> ColumnElement[bool]:
        return or_(cls.generated_text.is_(None), cls.text == cls.generated_text)


class SampleLabel(Base):
    """One row per sample × task: a sample may lack a task's label; the queue filters by task and label."""

    __tablename__ = "sample_labels"
    __table_args__ = (Index("ix_sample_labels_task_label", "task", "label", "sample_id"),)

    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True)
    task: Mapped[str] = mapped_column(String(100), primary_key=True)
    label: Mapped[str] = mapped_column(String(100))

    sample: Mapped[Sample] = relationship(back_populates="labels_rows")


class Review(Base):
    """Append-only audit trail of decisions; a sample's review_status follows from these rows."""

    __tablename__ = "reviews"
    # "Has this user voted on this variant?" is one probe; a variant's votes are the index's first column. A
    # user's reviews newest first are a range of ix_reviews_user_id (migration 0017: Postgres needs the id named).
    __table_args__ = (
        Index("ix_reviews_sample_id_user_id", "sample_id", "user_id"),
        Index("ix_reviews_user_id", "user_id", "id"),
        NEVER_REUSED_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(40), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    text_before: Mapped[str] = mapped_column(Text)
    text_after: Mapped[str] = mapped_column(Text)
    version_seen: Mapped[int] = mapped_column(Integer)
    # Signed by the automatic reviewer: part of the audit trail, never a vote (the status follows people's).
    automatic: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProtectedTerm(Base):
    """A word augmenters never replace in a dataset's texts (its topic words: "abortion" must not become
    "miscarriage"). Seeded with the words most associated with each class, edited by admins."""

    __tablename__ = "protected_terms"
    __table_args__ = (UniqueConstraint("dataset_id", "term"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    term: Mapped[str] = mapped_column(String(100))
    origin: Mapped[str] = mapped_column(String(16))  # seeded | manual
    task: Mapped[str | None] = mapped_column(String(100), default=None)  # seeded: the class it marks
    label: Mapped[str | None] = mapped_column(String(100), default=None)
    score: Mapped[float | None] = mapped_column(Float, default=None)  # seeded: its chi² with that class
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewAssignment(Base):
    """A variant leased to an annotator: theirs to review until `leased_until` (renewed while they work)."""

    __tablename__ = "review_assignments"
    __table_args__ = (
        UniqueConstraint("sample_id", "user_id"),
        Index("ix_review_assignments_dataset_user", "dataset_id", "user_id", "leased_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    leased_until: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "status", "priority", "id"),
        Index("ix_jobs_lease", "status", "lease_until"),
        NEVER_REUSED_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    # attempts given back to database outages (migration 0015): retried without counting, up to a setting
    outages: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    worker_id: Mapped[str | None] = mapped_column(String(120), default=None)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    # Live counters a handler reports (kept/dropped per filter, epoch, loss...), and its final result.
    progress_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class AugmentationPlan(Base):
    """What the minority-class planner decided: per task × class targets and the jobs it enqueued."""

    __tablename__ = "augmentation_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """A trainer run (or an ensemble of runs): config, data snapshot, metrics, curve and artifact location."""

    __tablename__ = "training_runs"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), default=None)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16), default="single")  # single | tfidf | ensemble
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    member_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)  # ensembles: the runs combined
    # What the run trained on, [[sample_id, content_hash], ...]: a Parquet file beside its artifacts
    # (snapshot_path); runs recorded before migration 0200 hold the list in `snapshot` instead.
    snapshot: Mapped[list[Any]] = mapped_column(JSON, default=list)
    snapshot_path: Mapped[str | None] = mapped_column(String(500), default=None)
    snapshot_size: Mapped[int | None] = mapped_column(Integer, default=None)
    # sha256 of its sorted pairs (services.run_snapshots.pairs_digest): runs with equal digests trained on the
    # same texts. Stored when the run finishes (migration 0010); older runs are digested when first combined.
    snapshot_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    curve: Mapped[list[Any]] = mapped_column(JSON, default=list)  # per epoch: loss, val metrics
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # learning-rate selection shared by the runs of one request: status, trials on val, the chosen lr_scale
    lr_selection: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    artifact_dir: Mapped[str | None] = mapped_column(String(500), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class ImpactReport(Base):
    """Originals-only vs. with-augmentation vs. leave-one-method-out, over several seeds."""

    __tablename__ = "impact_reports"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run_ids: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # arm -> [run ids]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class WorkerPresence(Base):
    """A running worker process: the job kinds it takes and the augmenters it can load, refreshed while it
    lives (`last_seen_at`); the API reports the augmenters of the workers seen recently."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # method -> status
    refresh_seconds: Mapped[float] = mapped_column(Float, default=15.0)  # how often this worker refreshes the row
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
