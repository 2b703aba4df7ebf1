"""Writes that only the Hanami protocol asks for."""

from __future__ import annotations

import re

from django.db import transaction

from apps.accounts import services as accounts
from apps.accounts.models import Project, User
from apps.accounts.selectors import default_project_for


@transaction.atomic
def home_project_for(*, user: User) -> Project:
    """The user's oldest project, or a new one of their own (id from their username) when they
    have none left: Hanami users always work in a project, also after theirs was deleted."""
    project = default_project_for(user=user)
    if project is not None:
        return project
    base = re.sub(r"[^a-zA-Z0-9_]", "_", user.username)[:50] or "user"
    if not base[0].isalpha():
        base = f"u{base}"
    candidate, n = base, 1
    while Project.objects.filter(pk=candidate).exists():
        n += 1
        candidate = f"{base}_{n}"
    return accounts.project_create(
        actor=user, name=f"{user.username}'s project", project_id=candidate
    )
