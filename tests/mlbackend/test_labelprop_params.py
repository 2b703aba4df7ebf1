"""labelprop `params` that JSON or the database cannot keep: NaN and Infinity (Python's json
reads them, no JSON column stores them) and lone surrogates (the escape `"\\ud800"`, which
json.dumps writes for such a str: no UTF-8 text holds it). Each is refused with a token the
napari client finds, never answered a bare 500 it would poll for forever, and never reaches a
task, a file or a checkpoint row."""

from __future__ import annotations

import json

import pytest

from apps.mlbackend.models import LabelpropCheckpoint, LabelpropSession, LabelpropVolume
from apps.tasks.models import Task
from tests.mlbackend.labelprop_helpers import (
    Napari,
    checkpoint_bytes,
    enable,
    multipart,
    npz_bytes,
    refusal,
    small_volume,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def napari(world, settings) -> Napari:
    enable(settings, world.project)
    return Napari()


def _arrays() -> bytes:
    img, _labels, mask = small_volume()
    return npz_bytes(img=img.astype("float32"), mask=mask.astype("uint8"))


def _post(napari: Napari, route: str, params: bytes):
    body, content_type = multipart({"arrays": _arrays(), "params": params})
    return napari.client.generic("POST", "/" + route, body, content_type)


def _failed(napari: Napari, response) -> str:
    """A token answered 200 whose session failed from the start: the download's text."""
    assert response.status_code == 200, response.content
    token = response.content.decode()
    assert napari.session_exists(token)
    download = napari.download(token)
    assert download.status_code == 409
    return download.content.decode()


def _stored_as_json(session: LabelpropSession) -> None:
    """What a JSON column of any database keeps: finite numbers, UTF-8 text."""
    json.dumps(session.params, allow_nan=False, ensure_ascii=False).encode("utf-8")
    session.error.encode("utf-8")


def _nothing_ran() -> bool:
    return not (
        LabelpropSession.objects.exclude(state="failed").exists()
        or LabelpropVolume.objects.exists()
        or LabelpropCheckpoint.objects.exists()
        or Task.objects.exists()
    )


# --- NaN and Infinity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("inference", b'{"foo": NaN, "checkpoint": "probe1.ckpt"}'),
        ("training", b'{"max_epochs": Infinity}'),
        ("training", b'{"shape": -Infinity, "name": "x"}'),
        ("inference", b'{"checkpoint": "probe1.ckpt", "z_axis": 1e999}'),  # read as inf
    ],
)
def test_nan_and_infinity_in_params_are_refused_with_a_token(napari, route, params):
    # Before: IntegrityError (JSON_VALID) storing the session, then again storing the refusal:
    # 500 "Internal error." as plain text, which the client polled for forever.
    response = _post(napari, route, params)
    assert response.status_code == 400, response.content
    reason = refusal(napari, response)
    assert "params: not valid JSON" in reason and "NaN" in reason and "Infinity" in reason
    session = LabelpropSession.objects.get()
    assert session.params == {}  # nothing of what could not be read
    assert _nothing_ran()


def test_a_refusal_is_recorded_whatever_the_params_it_refuses(napari):
    """`session_refuse` keeps only what a JSON column can: a non-finite number or a lone
    surrogate in the params it is given does not stop the refusal from being recorded."""
    from apps.mlbackend.labelprop import selectors, services

    session = services.session_refuse(
        access=selectors.gateway_access(remote_addr="127.0.0.1"),
        kind="inference",
        status=500,
        message="Internal error. \ud800",
        params={"foo": float("nan"), "bar": [float("inf")], "name": "a\ud800b", "\udfff": 1},
    )
    assert session is not None  # before: None (the row could not be written)
    session.refresh_from_db()
    _stored_as_json(session)
    assert session.params["foo"] is None and session.params["bar"] == [None]
    assert session.params["name"] == "a\ufffdb" and session.params["\ufffd"] == 1
    assert session.state == "failed" and "Internal error." in session.error


def test_a_500_with_unstorable_params_still_answers_a_token(napari, monkeypatch):
    from apps.mlbackend.labelprop import services

    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "session_start", broken)
    response = _post(napari, "inference", b'{"checkpoint": "x.ckpt", "note": "\\ud800\\u0000"}')
    assert response.status_code == 500
    assert "Request refused (500): Internal error." in refusal(napari, response)
    session = LabelpropSession.objects.get()
    _stored_as_json(session)
    assert session.params == {"checkpoint": "x.ckpt", "note": "\ufffd\ufffd"}


# --- lone surrogates -----------------------------------------------------------------------------


def test_a_lone_surrogate_checkpoint_name_is_refused_before_training(napari):
    # Before: 200 and a token; the training ran to its end, then storing the checkpoint failed
    # (UnicodeEncodeError), its work lost.
    img, _labels, mask = small_volume()
    for name in ("\ud800", "model-\udfff.ckpt", "/home/me/\ud83d.ckpt"):
        response = napari.training(img, mask, shape=32, max_epochs=1, checkpoint_name=name)
        reason = _failed(napari, response)
        assert "name: " in reason and "surrogate" in reason, reason
    for session in LabelpropSession.objects.all():
        _stored_as_json(session)
    assert _nothing_ran()
    # A well-formed pair (an emoji, sent as its two escapes by json.dumps) is a name like any.
    response = napari.training(img, mask, shape=32, max_epochs=1, checkpoint_name="🧠 brain")
    assert response.status_code == 200
    session = LabelpropSession.objects.get(pk=response.content.decode())
    assert session.state == "pending" and session.task.params["name"] == "🧠 brain.ckpt"


def test_lone_surrogates_in_other_params_are_refused_or_kept_harmless(napari):
    assert napari.send_ckpt("base.ckpt", checkpoint_bytes()).content == b"ok"
    img, _labels, mask = small_volume()
    cases = [
        (napari.inference(img, mask, checkpoint="\ud800.ckpt"), "checkpoint: "),
        (napari.inference(img, mask, checkpoint="base.ckpt", criteria="\ud800"), "criteria"),
        (napari.training(img, mask, pretrained_checkpoint="\udc00"), "pretrained_ckpt: "),
        (
            napari.post_arrays(
                "inference", {"mask": mask}, {"hash": "\ud800" * 32, "checkpoint": "base.ckpt"}
            ),
            "hash: ",
        ),
    ]
    for response, reason in cases:
        assert reason in _failed(napari, response)
    for session in LabelpropSession.objects.all():
        _stored_as_json(session)
    assert LabelpropSession.objects.filter(state="failed").count() == len(cases)
    assert not (LabelpropVolume.objects.exists() or Task.objects.exists())
