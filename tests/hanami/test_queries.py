"""A gateway list costs a constant number of queries whatever its length."""

import pytest

from tests.factories import PASSWORD, make_project, make_user
from tests.hanami.conftest import SDK, token_for

pytestmark = pytest.mark.django_db

# The caller, the users, all their memberships at once, and the audit entry (in a savepoint); one
# membership query per user before (12 and 30 queries for the two sizes below).
USER_LIST_QUERIES = 6


@pytest.mark.parametrize("extra_users", [2, 20])
def test_user_list_queries_do_not_grow_with_the_users(
    world, extra_users, django_assert_max_num_queries
):
    for _ in range(extra_users):
        make_project(make_user())
    admin = SDK(token_for("root", PASSWORD))
    with django_assert_max_num_queries(USER_LIST_QUERIES):
        response = admin.get("user/all")
    assert response.status_code == 200
    rows = response.json()["body"]
    assert len(rows) >= extra_users
    assert all(len(row[3]) == 1 for row in rows if row[0].startswith("user"))
