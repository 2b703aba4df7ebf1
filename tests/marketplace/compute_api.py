"""A stand-in for the morpheo-compute API (`api/main.go` before its Hyperledger phase), run as a
separate process by the push tests: the same routes and answers, and it records every request.

    python compute_api.py RECORD_FILE [--fail-first N] [--status CODE]

Routes: `GET /` (the route list), `GET /health` ({"status": "ok"}), `POST /learn` and
`POST /pred`: the body is decoded the way Go's encoding/json decodes it into go-packages'
`common.LearnUplet` / `common.Preduplet` (typed fields: uuids, lists of uuids, ints, strings;
unknown fields ignored; null leaves the zero value), then `Check()`ed; a valid uplet answers 202
{"message": ...}, an invalid one 400 {"error": ...}, as the compute API does. Every request is
appended to RECORD_FILE as one JSON line {method, path, headers, body} before it is answered.
`--fail-first N` answers the first N POSTs with `--status` (default 503) instead.
The port it listens on (127.0.0.1, chosen by the system) is printed on stdout once it listens.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NIL = uuid.UUID(int=0)
STATUSES = ("todo", "pending", "done", "failed")

# Field -> Go type of common.LearnUplet and common.Preduplet (go-packages, 2017).
LEARNUPLET = {
    "uuid": "uuid",
    "problem": "uuid",
    "workflow": "uuid",
    "train_data": "uuids",
    "test_data": "uuids",
    "algo": "uuid",
    "model_start": "uuid",
    "model_end": "uuid",
    "rank": "int",
    "worker": "uuid",
    "status": "string",
    "timestamp_request": "int",
    "timestamp_done": "int",
}
PREDUPLET = {
    "uuid": "uuid",
    "problem": "uuid",
    "workflow": "uuid",
    "model": "uuid",
    "data": "uuid",
    "worker": "uuid",
    "status": "string",
    "timestamp_request": "int",
    "timestamp_done": "int",
    "prediction_storage_uuid": "uuid",
}


class DecodeError(Exception):
    pass


def _uuid(value, name):
    if not isinstance(value, str):
        raise DecodeError(f"json: cannot unmarshal {type(value).__name__} into field {name}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise DecodeError(f"uuid: incorrect UUID format in field {name}") from None


def decode(body: bytes, fields: dict[str, str]) -> dict:
    """What Go's json.Unmarshal leaves in the struct (zero values for absent or null fields)."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    if not isinstance(document, dict):
        raise DecodeError("json: cannot unmarshal into a struct")
    zero = {"uuid": NIL, "uuids": [], "int": 0, "string": ""}
    out = {name: zero[kind] for name, kind in fields.items()}
    for name, kind in fields.items():
        value = document.get(name)
        if value is None:
            continue
        if kind == "uuid":
            out[name] = _uuid(value, name)
        elif kind == "uuids":
            if not isinstance(value, list):
                raise DecodeError(f"json: cannot unmarshal into field {name} of type []uuid.UUID")
            out[name] = [_uuid(v, name) for v in value]
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise DecodeError(f"json: cannot unmarshal into field {name} of type int")
            out[name] = value
        elif not isinstance(value, str):
            raise DecodeError(f"json: cannot unmarshal into field {name} of type string")
        else:
            out[name] = value
    return out


def check_learnuplet(u: dict) -> str | None:
    for name in ("uuid", "problem", "workflow", "algo"):
        if u[name] == NIL:
            return f"{name} field is required"
    for name in ("train_data", "test_data"):
        if not u[name]:
            return f"{name} field is empty or unset"
        if NIL in u[name]:
            return f"Nil UUID in {name} field"
    if u["status"] not in STATUSES:
        return f"status field ain't valid (provided: {u['status']})"
    return None


def check_preduplet(u: dict) -> str | None:
    for name in ("uuid", "problem", "workflow", "model", "data"):
        if u[name] == NIL:
            return f"{name} field is unset"
    if u["status"] not in STATUSES:
        return f"status field ain't valid (provided: {u['status']})"
    return None


ROUTES = {
    "/learn": (LEARNUPLET, check_learnuplet, "Learn-uplet ingested accordingly", "learn-uplet"),
    "/pred": (PREDUPLET, check_preduplet, "Pred-uplet ingested", "pred-uplet"),
}


class Handler(BaseHTTPRequestHandler):
    server_version = "compute-api-standin"

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, status: int, payload) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _record(self, body: bytes) -> None:
        line = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        with self.server.lock, open(self.server.record, "a") as out:
            out.write(json.dumps(line) + "\n")

    def do_GET(self):
        self._record(b"")
        if self.path == "/":
            self._answer(200, ["/", "/health", "/learn", "/pred"])
        elif self.path == "/health":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error": "Not Found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self._record(body)
        route = ROUTES.get(self.path)
        if route is None:
            self._answer(404, {"error": "Not Found"})
            return
        with self.server.lock:
            failing = self.server.fail_left > 0
            self.server.fail_left -= 1 if failing else 0
        if failing:
            self._answer(self.server.fail_status, {"error": "unavailable"})
            return
        fields, check, accepted, what = route
        try:
            uplet = decode(body, fields)
        except DecodeError as exc:
            self._answer(400, {"error": f"Error decoding body to JSON: {exc}"})
            return
        problem = check(uplet)
        if problem:
            self._answer(400, {"error": f"Invalid {what}: {problem}"})
            return
        self._answer(202, {"message": accepted})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("record")
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--status", type=int, default=503)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.record = args.record
    server.lock = threading.Lock()
    server.fail_left = args.fail_first
    server.fail_status = args.status
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
