"""URIs shown to people: credentials redacted, links to MLflow model versions."""

from __future__ import annotations

import pytest

from ct_assets.uris import ModelVersionLink, model_version_link, redact_uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("https://alice:s3cret@mlflow.example/base", "https://***@mlflow.example/base"),
        ("https://ghp_token@mlflow.example", "https://***@mlflow.example"),
        (
            "https://mlflow.example/?token=abc&workspace=7&api_key=k",
            "https://mlflow.example/?token=***&workspace=7&api_key=***",
        ),
        (
            "postgresql://ct:pw@db:5432/mlflow?sslmode=require&password=pw",
            "postgresql://***@db:5432/mlflow?sslmode=require&password=***",
        ),
        ("sqlite:////home/ct/.ct/mlflow/mlflow.db", "sqlite:////home/ct/.ct/mlflow/mlflow.db"),
        ("databricks", "databricks"),
    ],
)
def test_credentials_in_a_tracking_uri_are_redacted(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert "s3cret" not in redact_uri(uri) and "abc" not in redact_uri(uri)


@pytest.mark.parametrize(
    ("uri", "link"),
    [
        (
            "https://alice:s3cret@mlflow.example:8443/base/?token=abc",
            ModelVersionLink(
                "url", "https://mlflow.example:8443/base/#/models/ct%20model/versions/3"
            ),
        ),
        (
            "http://127.0.0.1:5000",
            ModelVersionLink("url", "http://127.0.0.1:5000/#/models/ct%20model/versions/3"),
        ),
        ("sqlite:////srv/ct/mlflow.db", ModelVersionLink("path", "/srv/ct/mlflow.db")),
        ("file:///srv/ct/mlruns", ModelVersionLink("path", "/srv/ct/mlruns")),
        ("/srv/ct/mlruns", ModelVersionLink("path", "/srv/ct/mlruns")),
        (
            "postgresql://ct:pw@db/mlflow",
            ModelVersionLink("text", "models:/ct model/3 in postgresql://***@db/mlflow"),
        ),
    ],
)
def test_the_model_version_link_follows_the_tracking_uri(uri: str, link: ModelVersionLink) -> None:
    assert model_version_link(uri, "ct model", "3") == link
