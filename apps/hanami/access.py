"""Tenancy of the Hanami gateway and its socket, in one place for both.

The project of every Hanami call is the token's `project_id` claim. When that project no longer
exists (the SDK's own test deletes every project, the caller's included) the caller works in
their home project, never in someone else's.
"""

from __future__ import annotations

import uuid
from typing import Any

from apps.accounts.authentication import user_for_token
from apps.accounts.models import Project
from apps.clusters import selectors as clusters_selectors
from apps.clusters.models import Cluster
from apps.core.exceptions import Forbidden, NotFound, Unauthorized, ValidationFailed
from apps.core.tenancy import ProjectAccess, project_access
from apps.datasets import selectors as datasets_selectors
from apps.datasets.models import Dataset, UploadSession
from apps.hanami.services import home_project_for


def hanami_project_access(*, user, project_id) -> ProjectAccess:
    """The token's project; when it no longer exists, the user's home project."""
    try:
        return project_access(user=user, project_id=project_id)
    except NotFound:
        if not user or not user.is_authenticated:
            raise
        if isinstance(project_id, str) and Project.objects.filter(pk=project_id).exists():
            raise  # a real project that is not the caller's: no fallback
        home = home_project_for(user=user)
        return project_access(user=user, project_id=home.pk)


def token_access(raw_token: Any) -> tuple[ProjectAccess, dict]:
    """The caller's rights and the token's claims for a raw token (the socket's first frame)."""
    if not isinstance(raw_token, str) or not raw_token:
        raise Unauthorized("Missing token.")
    user, token = user_for_token(raw_token)
    access = hanami_project_access(user=user, project_id=token.get("project_id"))
    return access, dict(token.payload)


def socket_cluster(access: ProjectAccess, cluster_id: Any) -> Cluster:
    """The cluster a direct-io socket talks to: one of the token's project the caller sees."""
    try:
        uuid.UUID(str(cluster_id))
    except ValueError:
        raise NotFound("Cluster not found.") from None
    return clusters_selectors.cluster_get(access=access, cluster_id=cluster_id)


def socket_upload(
    access: ProjectAccess, session_id: Any, *, uploading: bool = True
) -> UploadSession:
    """The upload session a socket writes: one the caller may change in the token's project and,
    with `uploading`, whose dataset still takes uploads."""
    try:
        uuid.UUID(str(session_id))
    except ValueError:
        raise NotFound("Upload not found.") from None
    access.require_write()
    session = datasets_selectors.upload_session_editable(access=access, session_id=session_id)
    if session is None:
        raise NotFound("Upload not found.")
    if uploading and session.dataset_id is not None:
        status = session.dataset.status if session.dataset is not None else None
        if status != Dataset.Status.UPLOADING:
            raise ValidationFailed("The dataset of this upload is no longer uploading.")
    return session


def require_global_admin(user) -> None:
    """User and project administration, and other users' logs, are for global admins."""
    if not user.is_superuser:
        raise Forbidden("Only admins may do this.")
