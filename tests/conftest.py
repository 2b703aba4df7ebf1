"""Shared fixtures: users, two tenants, authenticated API clients."""

import os
from dataclasses import dataclass

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from apps.accounts.models import Project, User
from apps.accounts.services import token_pair_for
from apps.core.tenancy import Role
from tests.factories import add_member, make_project, make_user


def pytest_configure(config):
    """Torch's default intra-op threads fight with the server, the workers and each other on a
    small shared host (an epoch went from 1.7 s to 19.5 s): the suite and the worker processes it
    starts use one thread each, set before torch is imported."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_THREADS"):
        os.environ.setdefault(name, "1")
    import torch

    torch.set_num_threads(int(os.environ["TORCH_THREADS"]))


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Each test gets its own channel layer object: a Redis layer binds its connections and its
    receive lock to the event loop that used it, and every async test runs its own loop (a layer
    left busy by one test answered the next with "Two event loops are trying to receive()")."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DATA_DIR = tmp_path
    return settings.MEDIA_ROOT


def client_for(user: User | None, project: Project | None = None) -> APIClient:
    """An API client authenticated with a real JWT (Bearer), like any API caller."""
    client = APIClient()
    if user is not None:
        token = token_pair_for(user=user, project=project)["access"]
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@dataclass
class World:
    """Two tenants. `outsider` is admin of project B only; nobody of B is in A."""

    global_admin: User
    owner: User  # project admin of A
    member: User
    viewer: User
    project: Project
    outsider: User
    other_project: Project

    def client(self, user: User | None) -> APIClient:
        return client_for(user)


@pytest.fixture
def world(db) -> World:
    global_admin = make_user("root", is_admin=True)
    owner = make_user("alice")
    member = make_user("bob")
    viewer = make_user("carol")
    project = make_project(owner, name="Project A")
    add_member(project, member, Role.MEMBER)
    add_member(project, viewer, Role.VIEWER)
    outsider = make_user("mallory")
    other_project = make_project(outsider, name="Project B")
    return World(global_admin, owner, member, viewer, project, outsider, other_project)


@pytest.fixture
def owner_client(world) -> APIClient:
    return client_for(world.owner)


@pytest.fixture
def member_client(world) -> APIClient:
    return client_for(world.member)
