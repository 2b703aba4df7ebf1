"""Request bodies through the ASGI application daphne serves (`config.asgi.application`): a body
of up to REQUEST_BODY_MEMORY_BYTES stays in memory, a larger one is spooled to a temporary file,
one daphne already spilled to a file is read in place, all reach the view whole; a client that
goes away mid-body gets nothing written; a spilled body counts whole against the size limits."""

import asyncio
import tempfile

import pytest

from apps.core import asgi as orchard_asgi
from apps.core.asgi import SpilledBody, body_length
from apps.datasets.models import UploadSession
from tests.asgi import exchange, http_scope
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def _upload_session(world, size: int) -> str:
    response = client_for(world.owner).post(
        f"/api/projects/{world.project.pk}/uploads", {"filename": "f", "size": size}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["data"]["id"]


async def _put(
    world, upload: str, pieces: list[bytes], *, disconnect: bool = False, length: bool = True
) -> list:
    """PUT `pieces` as separate `http.request` messages (as daphne sends a body); the messages
    the application sent back."""
    from channels.db import database_sync_to_async

    from apps.accounts.services import token_pair_for

    token = (await database_sync_to_async(token_pair_for)(user=world.owner))["access"]
    scope = http_scope(
        "PUT",
        f"/api/projects/{world.project.pk}/uploads/{upload}?position=0",
        [
            (b"content-type", b"application/octet-stream"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
    )
    if length:  # else sent chunked, as Twisted takes a body without a Content-Length
        size = sum(body_length({"body": piece}) for piece in pieces)
        scope["headers"].append((b"content-length", str(size).encode()))
    messages = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    if disconnect:
        messages[-1] = {"type": "http.disconnect"}
    return await exchange(scope, messages)


def _spools(monkeypatch) -> list[int]:
    """The sizes `OrchardASGIHandler` spooled to a temporary file."""
    seen = []
    original = orchard_asgi._spool

    def spool(chunks):
        seen.append(sum(map(len, chunks)))
        return original(chunks)

    monkeypatch.setattr(orchard_asgi, "_spool", spool)
    return seen


@pytest.mark.asyncio
@pytest.mark.parametrize("memory_bytes", [1 << 20, 2500])
async def test_a_body_in_pieces_reaches_the_view_whole(world, settings, monkeypatch, memory_bytes):
    settings.REQUEST_BODY_MEMORY_BYTES = memory_bytes
    spooled = _spools(monkeypatch)
    data = bytes(range(256)) * 40  # 10,240 bytes in 1,000-byte pieces
    upload = await asyncio.to_thread(_upload_session, world, len(data))
    sent = await _put(world, upload, [data[i : i + 1000] for i in range(0, len(data), 1000)])
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]
    session = await UploadSession.objects.aget(pk=upload)
    assert session.complete and session.path.read_bytes() == data
    # In memory below the bound; past it, spooled once (what had come, plus the piece that
    # crossed it), the rest appended to the file.
    assert spooled == ([] if memory_bytes > len(data) else [3000])


@pytest.mark.asyncio
@pytest.mark.parametrize("memory_bytes", [1 << 20, 2500])
async def test_a_client_gone_mid_body_writes_nothing(world, settings, monkeypatch, memory_bytes):
    settings.REQUEST_BODY_MEMORY_BYTES = memory_bytes
    spooled = _spools(monkeypatch)
    upload = await asyncio.to_thread(_upload_session, world, 5000)
    sent = await _put(world, upload, [b"x" * 1000] * 5, disconnect=True)
    assert sent == []  # no answer to a client that left
    session = await UploadSession.objects.aget(pk=upload)
    assert session.received_bytes == 0
    assert spooled == ([] if memory_bytes > 5000 else [3000])


def test_the_chunks_reader_hands_out_whole_messages_without_copies():
    pieces = [b"ab\ncd", b"efgh", b"\nij"]
    reader = orchard_asgi.ChunksReader(pieces)
    assert reader.read(5) is pieces[0]
    assert reader.read(2) == b"ef" and reader.read(3) == b"gh\n"
    assert reader.read() == b"ij" and reader.read() == b"" and reader.read(4) == b""
    lines = orchard_asgi.ChunksReader(pieces)
    assert lines.readline() == b"ab\n"
    assert lines.readline() == b"cdefgh\n"
    assert lines.readline(1) == b"i"
    assert lines.readline() == b"j" and lines.readline() == b""
    lines.close()
    assert lines.closed


def _spilled(data: bytes) -> SpilledBody:
    file = tempfile.TemporaryFile()
    file.write(data)
    file.seek(0)
    return SpilledBody(file, len(data))


@pytest.mark.asyncio
async def test_a_body_daphne_spilled_to_a_file_is_read_in_place(world, settings, monkeypatch):
    """`config.daphne.BodyBuffer` hands a spilled body over as its file: the view reads that
    file (no second spool, no byte of it in memory) and it is closed when the request ends."""
    settings.REQUEST_BODY_MEMORY_BYTES = 2500
    spooled = _spools(monkeypatch)
    data = bytes(range(256)) * 40
    upload = await asyncio.to_thread(_upload_session, world, len(data))
    body = _spilled(data)
    sent = await _put(world, upload, [body])
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]
    session = await UploadSession.objects.aget(pk=upload)
    assert session.complete and session.path.read_bytes() == data
    assert spooled == [] and body.file.closed


@pytest.mark.asyncio
async def test_a_spilled_body_counts_whole_against_the_upload_limit(world, settings):
    """A body without a Content-Length (chunked) is measured as it comes: a spilled one by its
    file's size, not by the empty bytes it is."""
    settings.UPLOAD_MAX_BYTES = 4000
    upload = await asyncio.to_thread(_upload_session, world, 3000)
    sent = await _put(world, upload, [_spilled(b"x" * 5000)], length=False)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [413]
    session = await UploadSession.objects.aget(pk=upload)
    assert session.received_bytes == 0


@pytest.mark.asyncio
async def test_a_spilled_piece_after_others_is_appended_in_order(world, settings, monkeypatch):
    """Daphne sends a spilled body alone; should a spilled piece follow others, what came first
    is spooled and the piece appended to it (nothing dropped, its file closed)."""
    settings.REQUEST_BODY_MEMORY_BYTES = 1 << 20
    spooled = _spools(monkeypatch)
    data = bytes(range(256)) * 40
    upload = await asyncio.to_thread(_upload_session, world, len(data))
    tail = _spilled(data[1000:])
    sent = await _put(world, upload, [data[:1000], tail])
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]
    session = await UploadSession.objects.aget(pk=upload)
    assert session.complete and session.path.read_bytes() == data
    assert spooled == [1000] and tail.file.closed
