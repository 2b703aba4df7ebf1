"""The embedded default is safe to leave running: no secret from the repository signs anything.

Before, `make run` signed JWTs with a SECRET_KEY written in config/settings/base.py, so anyone who
read the repository could forge an admin token for every install.
"""

import os
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from django.conf import settings

from apps.accounts.services import token_pair_for
from tests.conftest import client_for
from tests.factories import make_user

ROOT = Path(__file__).resolve().parents[2]
# The key that config/settings/base.py used to hold (public in the repository's history).
OLD_REPO_KEY = "orchard-dev-insecure-key-change-me-0123456789abcdef"


def forged_token(user, key: str) -> str:
    now = datetime.now(UTC)
    claims = {
        "token_type": "access",
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "iat": int(now.timestamp()),
        "jti": uuid.uuid4().hex,
        "user_id": str(user.id),
    }
    return jwt.encode(claims, key, algorithm="HS256")


@pytest.mark.django_db
@pytest.mark.parametrize("key", [OLD_REPO_KEY, "x" * 64])
def test_a_token_signed_with_any_key_but_the_installs_is_refused(key):
    admin = make_user("root", is_admin=True)
    client = client_for(None)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged_token(admin, key)}")
    assert client.get("/api/users").status_code == 401
    client.credentials(HTTP_X_AUTH_TOKEN=forged_token(admin, key))
    assert client.get("/control/v1/user/all").status_code == 401


@pytest.mark.django_db
def test_the_installs_own_tokens_work():
    admin = make_user("root", is_admin=True)
    assert client_for(admin).get("/api/users").status_code == 200
    assert token_pair_for(user=admin)["access"]


def test_the_repository_holds_no_usable_secret():
    assert settings.SECRET_KEY != OLD_REPO_KEY
    assert settings.SIMPLE_JWT["SIGNING_KEY"] != OLD_REPO_KEY
    for path in (ROOT / "config" / "settings").glob("*.py"):
        assert OLD_REPO_KEY not in path.read_text()


def _settings_in_fresh_process(data_dir: Path, module: str = "config.settings.dev") -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "JWT_SIGNING_KEY")}
    env.update(ORCHARD_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE=module)
    code = (
        "import django; from django.conf import settings; django.setup(); "
        "print(settings.SECRET_KEY); print(settings.SIMPLE_JWT['SIGNING_KEY']); "
        "print(settings.DEBUG)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_embedded_mode_generates_a_private_secret_at_first_start_and_keeps_it(tmp_path):
    secret, signing, debug = _settings_in_fresh_process(tmp_path)
    path = tmp_path / "secret_key"
    assert path.read_text().strip() == secret == signing
    assert len(secret) >= 50 and secret != OLD_REPO_KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert debug == "False"  # the embedded default: a developer opts in with DEBUG=1
    # A restart reuses it (tokens stay valid); another install gets another key.
    assert _settings_in_fresh_process(tmp_path)[0] == secret
    assert _settings_in_fresh_process(tmp_path / "other")[0] != secret
