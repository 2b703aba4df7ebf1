"""Hostile bodies on the Label Studio surface (issue #16, item 8): a 60 MiB body declared
`application/octet-stream` is refused from its Content-Length (the upload limit is for upload
routes only), and 100,000-deep nested JSON answers 400 in the protocol's format, never 500."""

import json

import pytest
from channels.testing import HttpCommunicator

from apps.mlbackend.models import LabelStudioAnnotation
from tests.mlbackend.labelstudio_helpers import LabelStudioClient, make_backend

SIXTY_MIB = 60 * 1024 * 1024


@pytest.mark.asyncio
@pytest.mark.parametrize("route", ["predict", "webhook", "setup"])
async def test_a_declared_60_mib_octet_stream_body_is_refused_before_reading(route):
    from config.asgi import application

    communicator = HttpCommunicator(
        application,
        "POST",
        f"/ml/mlb-0123456789ab/{route}",
        body=b"{}",
        headers=[
            (b"host", b"testserver"),
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(SIXTY_MIB).encode()),
        ],
    )
    response = await communicator.get_response(timeout=5)
    assert response["status"] == 413
    body = json.loads(response["body"])
    assert body["status"] == 413 and "API_MAX_BODY_BYTES" in body["detail"]


@pytest.mark.django_db
def test_an_octet_stream_body_over_the_api_limit_is_refused_and_stores_nothing(world, settings):
    settings.API_MAX_BODY_BYTES = 1000
    backend = make_backend(world.project, world.owner)
    body = {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": 1, "result": []},
        "pad": "x" * 2000,
    }
    ls = LabelStudioClient(backend.pk)
    r = ls.client.post(
        f"{ls.base}/webhook", json.dumps(body), content_type="application/octet-stream"
    )
    assert r.status_code == 413 and r.json()["status"] == 413
    assert not LabelStudioAnnotation.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("route", ["predict", "webhook", "setup", "train"])
def test_deeply_nested_json_answers_400_in_the_protocol_format(world, route):
    backend = make_backend(world.project, world.owner)
    depth = 100_000
    ls = LabelStudioClient(backend.pk)
    r = ls.client.post(
        f"{ls.base}/{route}", "[" * depth + "]" * depth, content_type="application/json"
    )
    assert r.status_code == 400 and r["Content-Type"] == "application/json"
    assert r.json()["status"] == 400 and set(r.json()) == {"status", "detail"}
