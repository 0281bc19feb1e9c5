"""The one exception hierarchy of featureledger.

Every error says what was wrong and what to do about it. Built-in exception types are
mixed in where a caller would naturally catch them (``KeyError`` for unknown names,
``ValueError`` for malformed input), so ``except KeyError`` keeps working.

Each class carries a stable ``code`` (used by the CLI exit status and the HTTP server's
status mapping) and a ``transient`` flag that retry logic reads instead of the message.

::

    FeatureLedgerError
    ├── ConfigError                       (ValueError)  bad featureledger.yaml / settings
    ├── MissingDependencyError            (ImportError) optional extra not installed
    ├── DefinitionError                   (ValueError)  an invalid Entity / Field / FeatureView
    │   ├── InvalidReferenceError                       malformed feature reference
    │   ├── RepositoryLoadError                         a feature repository file failed to load
    │   └── NameTooLongError                            a name longer than the store can hold
    ├── ValueTooLongError                 (ValueError)  a value longer than its registry column
    │   └── NameTooLongError                            (also a DefinitionError)
    ├── NotFoundError                     (KeyError)
    │   ├── UnknownFeatureError                         view or feature does not exist
    │   ├── UnknownViewError
    │   ├── UnknownEntityError
    │   ├── UnknownFeatureSetError
    │   ├── UnknownCommitError
    │   ├── UnknownDatasetError
    │   ├── UnknownRunError
    │   ├── UnknownModelError
    │   └── UnknownDeploymentError
    ├── IncompatibleChangeError                         apply refused by a compatibility mode
    ├── ValidationFailedError                           strict ingestion rejected
    ├── IngestionError                                  data could not be read / mapped
    ├── RetrievalError                                  a retrieval request cannot be answered
    ├── ReproductionError                               a dataset cannot be rebuilt exactly
    │   └── CommitExpiredError                          it read commits retention deleted
    ├── FeatureRetiredError                             a read of a feature past retire_on
    ├── DerivationError                   (ValueError)  a derived view cannot be computed
    ├── TrackingError                     (ValueError)  invalid run / model / deployment input
    ├── ConcurrencyError                                lost a race; safe to retry (transient)
    ├── StorageError                                    a backend failed
    │   ├── CommitFileError                             a commit's file is missing or unreadable
    │   ├── BackendUnavailableError                     a server did not answer (transient)
    │   ├── DiskFullError                               no space (or quota) left; nothing written
    │   ├── RegistryReadOnlyError                       the registry refuses writes
    │   └── TamperedError                               a stored record no longer matches its digest
    │       ├── DefinitionTamperedError                 a definition's spec vs its hash
    │       └── CommitTamperedError                     a commit row vs its seal
    ├── AccessDeniedError             (PermissionError)
    │   └── PermissionDeniedError                       403: the access policy denies the principal
    ├── StateError                                      operation not valid in this state
    ├── ProjectScopeError                               a registry query missed its project (a bug)
    │   (the HTTP server's own refusals, each with the status it is answered with:)
    ├── InvalidJsonError                  (ValueError)  400: a body that is not JSON
    ├── UnsupportedMediaTypeError         (ValueError)  415: a body that is not declared JSON
    ├── RequestTooLargeError                            413: a body, keys or rows over a limit
    ├── RequestTimeoutError                             408: a body not received in time
    ├── ServerOverloadedError                           503: no worker free (transient)
    ├── DeadlineExceededError                           503: not done within the bound (transient)
    └── CircuitOpenError            (BackendUnavailableError) 503: a backend known to be down
    (data quality:)
    ├── QualityError                      (ValueError)  bad baseline, policy or threshold
    ├── SchemaDriftError                  (IngestionError) the source's columns no longer
    │                                                   match the definition
    └── UnknownAlertError                 (NotFoundError) no alert with that id

Warnings (``warnings.warn``, never raised by featureledger itself)::

    UserWarning
    ├── FeatureDataWarning                              a training set has a feature that is
    │                                                   null in every row (and why)
    └── FeatureLedgerWarning
        └── DeprecatedFeatureWarning                    a read of a deprecated feature (once
                                                        per process and feature)
"""

from __future__ import annotations

from typing import ClassVar


class FeatureLedgerError(Exception):
    """Root of every error raised by featureledger."""

    code: ClassVar[str] = "featureledger_error"
    http_status: ClassVar[int] = 500
    transient: ClassVar[bool] = False

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(ValueError, FeatureLedgerError):
    code = "config_error"
    http_status = 500


class MissingDependencyError(ImportError, FeatureLedgerError):
    code = "missing_dependency"

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the package '{package}', which is not installed. "
            f"Install it with: pip install 'featureledger[{extra}]'"
        )


class DefinitionError(ValueError, FeatureLedgerError):
    code = "invalid_definition"
    http_status = 422


class InvalidReferenceError(DefinitionError):
    code = "invalid_reference"


class RepositoryLoadError(DefinitionError):
    code = "repository_load_error"


class NotFoundError(KeyError, FeatureLedgerError):
    code = "not_found"
    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return FeatureLedgerError.__str__(self)


class UnknownFeatureError(NotFoundError):
    code = "unknown_feature"


class UnknownViewError(UnknownFeatureError):
    code = "unknown_view"


class UnknownEntityError(NotFoundError):
    code = "unknown_entity"


class UnknownFeatureSetError(NotFoundError):
    code = "unknown_feature_set"


class UnknownCommitError(NotFoundError):
    code = "unknown_commit"


class UnknownDatasetError(NotFoundError):
    code = "unknown_dataset"


class UnknownRunError(NotFoundError):
    code = "unknown_run"


class UnknownModelError(NotFoundError):
    code = "unknown_model"


class UnknownDeploymentError(NotFoundError):
    code = "unknown_deployment"


class IncompatibleChangeError(FeatureLedgerError):
    """An apply was refused because a change breaks the view's compatibility mode."""

    code = "incompatible_change"
    http_status = 409

    def __init__(self, message: str, violations: list | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []


class ValidationFailedError(FeatureLedgerError):
    """A strict ingestion found invalid rows; nothing was written."""

    code = "validation_failed"
    http_status = 422

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class IngestionError(ValueError, FeatureLedgerError):
    code = "ingestion_error"
    http_status = 422


class RetrievalError(ValueError, FeatureLedgerError):
    code = "retrieval_error"
    http_status = 422


class ReproductionError(FeatureLedgerError):
    code = "reproduction_error"
    http_status = 409


class DerivationError(ValueError, FeatureLedgerError):
    """A derived view's transformation is refused or fails; nothing was committed."""

    code = "derivation_error"
    http_status = 422


class TrackingError(ValueError, FeatureLedgerError):
    """A run, model or deployment call got input it cannot record."""

    code = "tracking_error"
    http_status = 422


class ConcurrencyError(FeatureLedgerError):
    code = "concurrency_conflict"
    http_status = 409
    transient = True


class StorageError(FeatureLedgerError):
    code = "storage_error"
    http_status = 503


class CommitFileError(StorageError):
    """A read met a commit file that is missing or cannot be read.

    ``commit_id`` and ``path`` (relative to the offline store root) say which, so a caller
    can quarantine the commit or restore the file without parsing the message.
    """

    code = "commit_file_error"

    def __init__(self, message: str, *, commit_id: str, path: str) -> None:
        super().__init__(message)
        self.commit_id = commit_id
        self.path = path


class BackendUnavailableError(StorageError):
    code = "backend_unavailable"
    transient = True


class AccessDeniedError(PermissionError, FeatureLedgerError):
    code = "access_denied"
    http_status = 403


class StateError(FeatureLedgerError):
    code = "invalid_state"
    http_status = 409


class FeatureDataWarning(UserWarning):
    """A training set is suspicious: a feature is null in every row (the message says the
    likely cause: no data in that version, a TTL too short, keys that match nothing)."""


class ProjectScopeError(FeatureLedgerError):
    """A registry statement would read or change rows without restricting them to its
    project; it is refused before it runs (a bug in featureledger, never a user error)."""

    code = "project_scope_error"
    http_status = 500


# -- environment and integrity (disk full, read-only registry, long values, tampering) -----


class DiskFullError(StorageError):
    """A write ran out of space (ENOSPC) or of quota (EDQUOT); what it was writing was
    removed, so nothing was committed. ``path`` is where the write failed."""

    code = "disk_full"
    http_status = 507

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class RegistryReadOnlyError(StorageError):
    """The registry database refuses writes (a read-only file, folder or server)."""

    code = "registry_read_only"


class ValueTooLongError(ValueError, FeatureLedgerError):
    """A value is longer than the registry column that would hold it; nothing was written.

    ``column`` is ``table.column``, ``limit`` its length in characters."""

    code = "value_too_long"
    http_status = 422

    def __init__(self, message: str, *, column: str | None = None,
                 limit: int | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.limit = limit


class NameTooLongError(ValueTooLongError, DefinitionError):
    """A definition's name is longer than the registry or the offline store can hold."""

    code = "name_too_long"


class TamperedError(StorageError):
    """A stored record no longer matches the digest taken when it was written: it was
    changed outside featureledger. Never transient: restore it from the audit trail or a
    backup."""

    code = "tampered"
    http_status = 500


class DefinitionTamperedError(TamperedError):
    """A definition version's stored spec no longer matches its definition hash."""

    code = "definition_tampered"

    def __init__(self, message: str, *, kind: str, name: str, version: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.version = version


class CommitTamperedError(TamperedError):
    """A commit's registry row no longer matches the seal taken when it was written (or
    when its status last changed)."""

    code = "commit_tampered"

    def __init__(self, message: str, *, commit_id: str) -> None:
        super().__init__(message)
        self.commit_id = commit_id


__all__ = [
    "AccessDeniedError",
    "BackendUnavailableError",
    "CommitFileError",
    "CommitTamperedError",
    "ConcurrencyError",
    "ConfigError",
    "DefinitionError",
    "DefinitionTamperedError",
    "DiskFullError",
    "FeatureDataWarning",
    "FeatureLedgerError",
    "IncompatibleChangeError",
    "IngestionError",
    "InvalidReferenceError",
    "MissingDependencyError",
    "NameTooLongError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProjectScopeError",
    "RegistryReadOnlyError",
    "RepositoryLoadError",
    "ReproductionError",
    "RetrievalError",
    "StateError",
    "StorageError",
    "TamperedError",
    "TrackingError",
    "UnknownCommitError",
    "UnknownDatasetError",
    "UnknownDeploymentError",
    "UnknownEntityError",
    "UnknownFeatureError",
    "UnknownFeatureSetError",
    "UnknownModelError",
    "UnknownRunError",
    "UnknownViewError",
    "ValidationFailedError",
    "ValueTooLongError",
]


# -- input hardening: source paths, strict CSV ---------------------------------------------
# (in the tree above: SourcePathError under AccessDeniedError, CsvFormatError under
# IngestionError; kept here, at the end, so parallel edits of this file merge cleanly)
class SourcePathError(AccessDeniedError):
    """A source path leads outside the repository to a place no configured prefix allows
    (``sources.allowed_prefixes`` in featureledger.yaml); nothing was read."""

    code = "source_path_not_allowed"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class CsvFormatError(IngestionError):
    """A CSV file has lines that are not one record each (a stray quote, a wrong number of
    fields); ``problems`` lists them (``{"file", "line", "problem"}``, the first ones)."""

    code = "csv_format_error"

    def __init__(self, message: str, problems: list[dict[str, object]] | None = None,
                 total: int = 0) -> None:
        super().__init__(message)
        self.problems = problems or []
        self.total = total or len(self.problems)


__all__ = sorted([*__all__, "CsvFormatError", "DerivationError", "SourcePathError"])


# -- the HTTP server's own refusals -------------------------------------------------------
# Kept at the end of the module so that additions elsewhere merge cleanly. Each is what a
# client caused or met at the server, answered with ``http_status``; the transient ones
# carry ``retry_after_s``, sent as the ``Retry-After`` header.


class InvalidJsonError(ValueError, FeatureLedgerError):
    """A request body that is not valid JSON (or not the JSON the route takes)."""

    code = "invalid_json"
    http_status = 400


class UnsupportedMediaTypeError(ValueError, FeatureLedgerError):
    """A request body declared as something other than JSON."""

    code = "unsupported_media_type"
    http_status = 415


class RequestTooLargeError(FeatureLedgerError):
    """A request over one of the server's limits (body bytes, entity rows, pushed rows)."""

    code = "request_too_large"
    http_status = 413


class RequestTimeoutError(FeatureLedgerError):
    """A request body that did not arrive within ``server.body_timeout_s``."""

    code = "request_timeout"
    http_status = 408


class ServerOverloadedError(FeatureLedgerError):
    """Every worker is busy and the queue in front of them is full: shed at once."""

    code = "overloaded"
    http_status = 503
    transient = True

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(FeatureLedgerError):
    """A request not done within ``server.request_timeout_s``; ``backend`` names the one it
    was waiting for when known (None: it waited for a worker, or computed too long)."""

    code = "deadline_exceeded"
    http_status = 503
    transient = True

    def __init__(self, message: str, *, backend: str | None = None,
                 retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.backend = backend
        self.retry_after_s = retry_after_s


class CircuitOpenError(BackendUnavailableError):
    """A backend failed repeatedly and is given a rest: requests that need it fail at once
    until a probe finds it answering again. ``backend`` names it."""

    code = "circuit_open"

    def __init__(self, message: str, *, backend: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.backend = backend
        self.retry_after_s = retry_after_s


# sorted again, so the list above can grow without touching this one
__all__ = sorted([
    *__all__,
    "CircuitOpenError",
    "DeadlineExceededError",
    "InvalidJsonError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ServerOverloadedError",
    "UnsupportedMediaTypeError",
])


# -- access control ---------------------------------------------------------------------------
# (in the tree above: PermissionDeniedError under AccessDeniedError; kept here, at the end, so
# parallel edits of this file merge cleanly)
class PermissionDeniedError(AccessDeniedError):
    """The applied access policy does not let the principal do this (HTTP 403). Raised before
    anything is read or written; the denial is in the audit trail."""

    code = "permission_denied"

    def __init__(self, message: str, *, principal: str, action: str,
                 resources: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.principal = principal
        self.action = action
        self.resources = resources

# -- governance: retention and deprecation schedules --------------------------------------
# (in the tree above: CommitExpiredError under ReproductionError; kept here, at the end, so
# parallel edits of this file merge cleanly)


class CommitExpiredError(ReproductionError):
    """A dataset read commits whose data retention has deleted, so it cannot be rebuilt.

    ``expired`` maps each such commit id to when it expired (µs since the epoch, UTC).
    """

    code = "commit_expired"
    http_status = 410

    def __init__(self, message: str, *, dataset_id: str, expired: dict[str, int]) -> None:
        super().__init__(message)
        self.dataset_id = dataset_id
        self.expired = expired


class FeatureRetiredError(FeatureLedgerError):
    """A read asked for a feature past its retirement date, and the reader (a deployment)
    has no recorded exception. ``feature`` is the pinned reference, ``replacement`` what to
    read instead (None when the deprecation named none)."""

    code = "feature_retired"
    http_status = 410

    def __init__(self, message: str, *, feature: str, replacement: str | None) -> None:
        super().__init__(message)
        self.feature = feature
        self.replacement = replacement


class FeatureLedgerWarning(UserWarning):
    """A featureledger warning (``warnings.warn``, never raised by featureledger itself)."""


class DeprecatedFeatureWarning(FeatureLedgerWarning):
    """A read of a deprecated feature (once per process and deprecation): the message
    names the reason, the replacement and the retirement date."""


__all__ = sorted([*__all__, "CommitExpiredError", "DeprecatedFeatureWarning",
                  "FeatureLedgerWarning", "FeatureRetiredError"])
class QualityError(ValueError, FeatureLedgerError):
    """A data-quality request cannot be answered as given: a malformed baseline, a policy
    or threshold that is not valid, a baseline with no data."""

    code = "quality_error"
    http_status = 400


class SchemaDriftError(IngestionError):
    """The source's columns no longer match the view's definition (added, missing,
    renamed-looking or retyped); ``.report`` holds the findings, each with what to do.
    Nothing was written."""

    code = "schema_drift"
    http_status = 422

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class UnknownAlertError(NotFoundError):
    code = "unknown_alert"


__all__ = sorted([*__all__, "QualityError", "SchemaDriftError", "UnknownAlertError"])

