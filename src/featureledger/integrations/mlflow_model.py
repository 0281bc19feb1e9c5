"""Models in MLflow's model registry, with their feature spec; loading them back to score.

``register_model`` logs a model through MLflow (the pyfunc flavour) into the MLflow run
linked to the featureledger run that produced it, with ``featureledger.json`` (the feature
spec: project, model id, feature set, pinned feature references, entity keys, training
datasets with their content hashes) inside the model's folder, and registers it as the
next version of a registered model. The registered version is tagged with the
featureledger model id, so ``models:/name/N`` resolves to the featureledger model and its
features (:func:`featureledger.integrations.mlflow.resolve`).

What can be registered: an object with a ``predict(frame)`` method (a scikit-learn
estimator, say), wrapped in :class:`FeatureModel`, which hands it the model's feature
columns in their pinned order; an ``mlflow.pyfunc.PythonModel``, as it is; or the folder of
a model saved with MLflow (it holds an ``MLmodel`` file), copied with the spec added.
``load_model`` loads a registered version (or any MLflow model URI) through pyfunc.

This module imports ``mlflow.pyfunc`` when loaded: import it only to register or load.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from featureledger.errors import MissingDependencyError, TrackingError

with warnings.catch_warnings():
    # MLflow's own modules warn about their own type hints while they load
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    try:
        import mlflow
        import mlflow.pyfunc
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError("MLflow models", "mlflow-skinny", "mlflow") from None

SPEC_FILE = "featureledger.json"
ARTIFACT_PATH = "model"


class FeatureModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """A model with a ``predict(frame)`` method, served the feature columns it was trained
    on, in their pinned order (extra columns, such as entity keys, are left out)."""

    def __init__(self, model: Any, columns: list[str]) -> None:
        self.model = model
        self.columns = list(columns)

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> Any:
        missing = [c for c in self.columns if c not in model_input.columns]
        if missing:
            raise TrackingError(f"the model's input lacks feature column(s) {missing}; it "
                                f"was trained on {self.columns}")
        return self.model.predict(model_input[self.columns])


@dataclass(frozen=True)
class RegisteredModel:
    """A version of a model in MLflow's model registry."""

    name: str
    version: str
    mlflow_run_id: str
    source: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _model_folder(artifact: Any, columns: list[str], into: Path) -> Path:
    """The MLflow model folder to log for ``artifact`` (see the module doc)."""
    folder = into / ARTIFACT_PATH
    if isinstance(artifact, (str, Path)) and (Path(artifact) / "MLmodel").is_file():
        shutil.copytree(artifact, folder)
        return folder
    if isinstance(artifact, mlflow.pyfunc.PythonModel):
        python_model = artifact
    elif callable(getattr(artifact, "predict", None)):
        python_model = FeatureModel(artifact, columns)
    else:
        raise TrackingError(
            f"cannot register {type(artifact).__name__} {str(artifact)[:100]!r} in MLflow's "
            "model registry: pass the model object (one with a predict(frame) method, or an "
            "mlflow.pyfunc.PythonModel) or the folder of a model saved with MLflow (with its "
            "MLmodel file)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        mlflow.pyfunc.save_model(str(folder), python_model=python_model,
                                 pip_requirements=requirements(artifact))
    return folder


def requirements(model: Any) -> list[str]:
    """The pinned distributions loading ``model`` needs: featureledger, MLflow, cloudpickle
    and the distribution its class comes from (``sklearn`` -> ``scikit-learn==1.6.1``).

    MLflow's own inference loads the model in a subprocess to watch its imports, which took
    about 10 s a model on a loaded machine; the model's class names its package directly.
    """
    from importlib import metadata

    def pinned(dist: str) -> str | None:
        try:
            return f"{dist}=={metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            return None

    out = [pinned("featureledger"), pinned("mlflow") or pinned("mlflow-skinny"),
           pinned("cloudpickle")]
    top = type(model).__module__.split(".")[0]
    for dist in sorted(metadata.packages_distributions().get(top, [])):
        out.append(pinned(dist))
    return list(dict.fromkeys(r for r in out if r))


def register_model(client: Any, mlflow_run_id: str, name: str, artifact: Any,
                   spec: dict[str, Any], columns: list[str]) -> RegisteredModel:
    """Log ``artifact`` with ``spec`` into the MLflow run and register it under ``name``."""
    with tempfile.TemporaryDirectory(prefix="featureledger-mlflow-") as tmp:
        folder = _model_folder(artifact, columns, Path(tmp))
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
        client.log_artifacts(mlflow_run_id, str(folder), ARTIFACT_PATH)
    source = f"{client.get_run(mlflow_run_id).info.artifact_uri}/{ARTIFACT_PATH}"
    if not client.search_registered_models(filter_string=f"name = '{_quote(name)}'"):
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            client.create_registered_model(name)  # (unless created meanwhile elsewhere)
    tags = {"featureledger.model_id": spec["model_id"],
            "featureledger.project": spec["project"],
            "featureledger.features": _cut(",".join(spec["features"])),
            "featureledger.datasets": _cut(",".join(d["dataset_id"] for d in spec["datasets"]))}
    if spec.get("feature_set"):
        tags["featureledger.feature_set"] = spec["feature_set"]
    mv = client.create_model_version(name, source, run_id=mlflow_run_id, tags=tags,
                                     description=spec.get("description") or None)
    return RegisteredModel(name=name, version=str(mv.version), mlflow_run_id=mlflow_run_id,
                           source=source)


def unregister(client: Any, registered: RegisteredModel) -> None:
    """Take back a registered version (when recording the model in featureledger failed)."""
    client.delete_model_version(registered.name, registered.version)


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def _cut(text: str, limit: int = 5000) -> str:
    return text if len(text) <= limit else text[:limit - 12] + "...(cut)"


def load_model(uri: str, tracking_uri: str | None) -> Any:
    """The pyfunc model at an MLflow model URI (``models:/name/N``, ``runs:/id/path``) or
    a local folder, downloaded through the configured tracking server."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        if uri.startswith("models:/") or uri.startswith("runs:/"):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=_download_uri(uri, tracking_uri), tracking_uri=tracking_uri,
                dst_path=tempfile.mkdtemp(prefix="featureledger-model-"))
            return mlflow.pyfunc.load_model(local)
        return mlflow.pyfunc.load_model(uri)


def _download_uri(uri: str, tracking_uri: str | None) -> str:
    if not uri.startswith("models:/"):
        return uri
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    body = uri[len("models:/"):].strip("/")
    if "@" in body:
        name, _, alias = body.partition("@")
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = body.partition("/")
    return str(client.get_model_version_download_uri(name, version))
