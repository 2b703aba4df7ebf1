"""Helpers that replay the Hanami SDK's requests: JSON bodies WITHOUT a Content-Type, the token
raw in X-Auth-Token, query strings for GET/DELETE."""

import json

import pytest
from django.test import Client

BASE = "/control/v1/"


class SDK:
    """Sends requests exactly like `hanami_sdk.hanami_request`."""

    def __init__(self, token: str | None = None):
        self.client = Client()
        self.token = token

    def _headers(self):
        return {"HTTP_X_AUTH_TOKEN": self.token} if self.token else {}

    def _send(self, method, path, body=None, params=None):
        url = BASE + path
        if params:
            from urllib.parse import urlencode

            url += "?" + urlencode(params)
        data = json.dumps(body) if body is not None else ""
        response = self.client.generic(method, url, data, content_type="", **self._headers())
        # The SDK sent no Content-Type: make sure the test really did the same.
        assert not response.wsgi_request.META.get("CONTENT_TYPE")
        return response

    def post(self, path, body):
        return self._send("POST", path, body)

    def put(self, path, body):
        return self._send("PUT", path, body)

    def get(self, path, **params):
        return self._send("GET", path, params=params)

    def delete(self, path, **params):
        return self._send("DELETE", path, params=params)


def token_for(user_id: str, password: str) -> str:
    response = SDK().post("token", {"id": user_id, "password": password})
    assert response.status_code == 200, response.content
    return response.json()["token"]


@pytest.fixture
def sdk_for():
    from apps.accounts.services import token_pair_for

    def make(user, project=None) -> SDK:
        return SDK(token_pair_for(user=user, project=project)["access"])

    return make
