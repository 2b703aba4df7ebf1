"""URL kwargs of the mlbackend routes for the cross-tenant test (tests/test_tenancy.py).

Each half of the app keeps its own entries below.
"""

# --- Label Studio half ---------------------------------------------------------------------------


def _labelstudio_backend(project, user):
    """A backend of `project` with Basic credentials: its /ml/ routes must refuse (401) a
    caller without them, and its /api/ routes must hide it (404) from other projects."""
    from tests.mlbackend.labelstudio_helpers import make_backend

    return make_backend(project, user, basic_auth=("ls", "s3cret-pass")).pk


def _labelstudio_secret(project, user):
    """A secret URL's secret that is not the backend's (the attacker does not know it)."""
    return "not-the-backends-secret-0123456789abcdef"


LABELSTUDIO_URL_KWARGS = {"backend_id": _labelstudio_backend, "secret": _labelstudio_secret}

# --- labelprop half ------------------------------------------------------------------------------

# The labelprop routes (/check, /inference, ...) take no URL kwargs: tokens, hashes and checkpoint
# names come in query strings and bodies, so tests/mlbackend/test_labelprop_tenancy.py tries
# them with another project's objects instead.
LABELPROP_URL_KWARGS: dict = {}

URL_KWARGS = {**LABELSTUDIO_URL_KWARGS, **LABELPROP_URL_KWARGS}
