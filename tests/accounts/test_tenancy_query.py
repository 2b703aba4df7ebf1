"""The tenancy lookup every project request makes (`apps.core.tenancy.project_access`) is one
query on memberships and projects: it never joins the users table (Membership's Meta ordering
by username did, on every request) and finds the project of a member, of a global admin who is
no member, and nothing for an outsider."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.core.exceptions import NotFound
from apps.core.tenancy import project_access

pytestmark = pytest.mark.django_db


def test_a_members_access_is_one_query_without_the_users_table(world):
    with CaptureQueriesContext(connection) as queries:
        access = project_access(user=world.member, project_id=str(world.project.pk))
    assert access.project == world.project and access.role == "member"
    (query,) = queries.captured_queries
    assert "accounts_membership" in query["sql"] and "accounts_user" not in query["sql"]
    assert "ORDER BY" not in query["sql"]


def test_admins_and_outsiders(world):
    access = project_access(user=world.global_admin, project_id=str(world.project.pk))
    assert access.project == world.project and access.is_global_admin and access.role is None
    with pytest.raises(NotFound):
        project_access(user=world.outsider, project_id=str(world.project.pk))
