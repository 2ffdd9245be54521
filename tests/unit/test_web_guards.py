"""Bad input in a path or query is the client's fault (4xx), a database data error is not an outage."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError, OperationalError

from services.ingest.api import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.notifier.entrypoints.api import create_app as notifier_app
from services.notifier.settings import NotifierSettings
from services.segmenter.entrypoints.api import create_app as segmenter_app
from services.segmenter.settings import SegmenterSettings
from shared.ratelimit import ClientRateLimitMiddleware
from shared.web import install_error_handlers, install_input_guard


class _CharacterNotInRepertoire(Exception):
    """Stands in for asyncpg's CharacterNotInRepertoireError (SQLSTATE 22021), a data exception."""


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_input_guard(app)

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str, q: str = "") -> dict[str, str]:
        if thing_id == "bad-data":
            raise DataError("SELECT 1", {}, _CharacterNotInRepertoire())
        if thing_id == "down":
            raise OperationalError("SELECT 1", {}, ConnectionError())
        return {"id": thing_id, "q": q}

    return app


@pytest.mark.parametrize(
    ("url", "field"),
    [("/things/%00", "path"), ("/things/a?q=%00", "query.q"), ("/things/a?q=x%0d%0ay", "query.q")],
)
def test_control_characters_in_path_or_query_are_a_400_naming_where(url: str, field: str) -> None:
    response = TestClient(_app()).get(url)
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": field, "message": "must not contain control characters"}]


def test_a_database_data_error_is_422_and_an_outage_stays_503() -> None:
    client = TestClient(_app(), raise_server_exceptions=False)
    bad = client.get("/things/bad-data")
    assert bad.status_code == 422
    assert bad.json()["error"] == "invalid_value"
    down = client.get("/things/down")
    assert down.status_code == 503
    assert down.headers["Retry-After"]
    assert client.get("/things/fine?q=ok").json() == {"id": "fine", "q": "ok"}


def test_every_service_limits_each_client_before_its_routes() -> None:
    apps = [
        ingest_app(IngestSettings()),
        segmenter_app(SegmenterSettings()),
        notifier_app(NotifierSettings()),
    ]
    for app in apps:
        classes: list[object] = [m.cls for m in app.user_middleware]
        assert ClientRateLimitMiddleware in classes, app.title
