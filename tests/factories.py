"""Plain factory functions for tests (they call the same services the surfaces call)."""

import itertools

from apps.accounts import services
from apps.accounts.models import Project, User
from apps.core.tenancy import Role

_seq = itertools.count(1)
PASSWORD = "correct-horse-battery-staple-42"


def make_user(username: str | None = None, *, is_admin: bool = False, **kwargs) -> User:
    username = username or f"user{next(_seq)}"
    return services.user_create(username=username, password=PASSWORD, is_admin=is_admin, **kwargs)


def make_project(owner: User, name: str | None = None, **kwargs) -> Project:
    return services.project_create(actor=owner, name=name or f"Project {next(_seq)}", **kwargs)


def add_member(project: Project, user: User, role: str = Role.MEMBER, **kwargs):
    return services.membership_set(project=project, user=user, role=role, **kwargs)
