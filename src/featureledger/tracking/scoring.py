"""Batch scoring: a model's features point in time, its predictions beside its inputs.

``score`` (``store.score_batch``) loads the model, looks its features up for the entity
rows as a recorded dataset (the same point-in-time retrieval as a training set), calls
``predict`` on the feature columns in the model's order, and returns the entity rows, the
features and the predictions as one frame (:class:`ScoredBatch`). The scoring is a run:
the active one, the one given, or a new one in experiment ``scoring``; the run reads the
dataset (``used_by``) and the lineage graph gets the edge model -> run (``scored``), so
``store.lineage(model_id, direction="downstream")`` lists where a model has scored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.context import current_run_id
from featureledger.errors import TrackingError

if TYPE_CHECKING:
    import pandas as pd

    from featureledger.offline.dataset import TrainingDataset
    from featureledger.tracking.service import TrackingService

SCORING_EXPERIMENT = "scoring"
MLFLOW_SCHEMES = ("models:/", "runs:/")


@dataclass
class ScoredBatch:
    """Predictions beside the inputs: the entity rows, the model's features and the
    prediction column(s), plus what made them (model, run, feature dataset)."""

    model_id: str
    model: str  # name@N
    run_id: str
    dataset: TrainingDataset = field(repr=False)
    prediction_columns: list[str]
    _frame: pd.DataFrame = field(repr=False)

    @property
    def dataset_id(self) -> str:
        return self.dataset.id

    @property
    def predictions(self) -> pd.Series | pd.DataFrame:
        """The prediction column (a frame when the model predicts several)."""
        cols = self.prediction_columns
        return self._frame[cols[0]] if len(cols) == 1 else self._frame[cols]

    def to_pandas(self) -> pd.DataFrame:
        return self._frame.copy()

    def to_polars(self) -> Any:
        import polars as pl

        return pl.from_pandas(self._frame)

    def __len__(self) -> int:
        return len(self._frame)


def _load(uri: str, loader: Callable[[str], Any] | None, tracking_uri: str | None,
          loaded: dict[str, Any]) -> Any:
    """The model behind ``uri``; an MLflow model version once per service (``models:/N``
    and ``runs:/`` artifacts do not change; an alias, ``models:/name@alias``, may move,
    so it is loaded each time)."""
    if loader is not None:
        return loader(uri)
    from featureledger.offline.storage import local_path

    local = local_path(uri)
    if uri.startswith(MLFLOW_SCHEMES) or (local is not None and (local / "MLmodel").is_file()):
        from featureledger.integrations.mlflow_model import load_model

        if uri in loaded:
            return loaded[uri]
        model = load_model(str(local) if local is not None else uri, tracking_uri)
        if uri.startswith(MLFLOW_SCHEMES) and "@" not in uri:
            loaded[uri] = model
        return model
    raise TrackingError(
        f"cannot load the model at {uri!r}: it is not an MLflow model (models:/, runs:/ or a "
        "folder with an MLmodel file). Pass loader=, a function from the artifact URI to an "
        "object with predict(frame), or log the model with registered_model_name=")


def _prediction_frame(raw: Any, rows: int, column: str) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    if isinstance(raw, pd.DataFrame):
        frame = raw.reset_index(drop=True)
        if frame.shape[1] == 1:
            frame.columns = [column]
        else:
            frame.columns = [f"{column}_{c}" for c in frame.columns]
    elif isinstance(raw, pd.Series):
        frame = pd.DataFrame({column: raw.reset_index(drop=True)})
    else:
        arr = np.asarray(raw)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim == 1:
            frame = pd.DataFrame({column: arr})
        elif arr.ndim == 2:
            frame = pd.DataFrame({f"{column}_{i}": arr[:, i] for i in range(arr.shape[1])})
        else:
            raise TrackingError(f"the model's predict returned a {arr.ndim}-dimensional "
                                "array; score_batch takes one value or one row per entity row")
    if len(frame) != rows:
        raise TrackingError(f"the model's predict returned {len(frame)} predictions for "
                            f"{rows} entity rows; it must return one per row")
    return frame


@contextlib.contextmanager
def _scoring_run(service: TrackingService, run_id: str | None, model_ref: str
                 ) -> Iterator[str]:
    given = run_id or current_run_id()
    if given is not None:
        yield given
        return
    with service.start_run(SCORING_EXPERIMENT, name=f"score {model_ref}",
                           tags={"featureledger.scored_model": model_ref}) as run:
        yield run.run_id


def score(service: TrackingService, model: str, entity_df: Any, *,
          loader: Callable[[str], Any] | None, as_of: Any, run_id: str | None,
          timestamp_column: str | None, prediction_column: str) -> ScoredBatch:
    from featureledger.registry.lineage_edges import SCORED, record_edges

    if not prediction_column:
        raise TrackingError("prediction_column must be a column name, e.g. 'prediction'")
    mv = service.get_model(model)
    predictor = _load(mv.artifact_uri, loader, service.ctx.config.mlflow.tracking_uri,
                      service.loaded_models)
    if not callable(getattr(predictor, "predict", None)):
        raise TrackingError(f"the model loaded for {mv.ref} has no predict method; the loader "
                            "must return an object with predict(frame)")
    with _scoring_run(service, run_id, mv.ref) as rid:
        ds = service.batch_features(mv.model_id, entity_df, as_of=as_of, run_id=rid,
                                    timestamp_column=timestamp_column)
        frame = ds.to_pandas()
        features = [c for c in ds.manifest["null_counts"] if c in frame.columns]
        clash = [c for c in frame.columns if c == prediction_column
                 or c.startswith(f"{prediction_column}_")]
        if clash:
            raise TrackingError(f"the input already has column(s) {clash}; pass another "
                                "prediction_column=")
        predictions = _prediction_frame(predictor.predict(frame[features]), len(frame),
                                        prediction_column)
        with service.db.write() as conn:
            record_edges(conn, [(mv.model_id, rid, SCORED, {"dataset_id": ds.id,
                                                           "rows": len(frame)})])
    import pandas as pd

    out = pd.concat([frame.reset_index(drop=True), predictions], axis=1)
    return ScoredBatch(model_id=mv.model_id, model=mv.ref, run_id=rid, dataset=ds,
                       prediction_columns=list(predictions.columns), _frame=out)
