"""Every admin page renders for a superuser: each registered model's changelist (with a search
query when it has search fields) and add form; anonymous users are sent to the login page."""

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_every_admin_changelist_and_add_form_renders(world):
    client = Client()
    client.force_login(world.global_admin)
    failures = []
    for model, model_admin in admin.site._registry.items():
        info = f"{model._meta.app_label}_{model._meta.model_name}"
        url = reverse(f"admin:{info}_changelist")
        query = "?q=a" if model_admin.search_fields else ""
        response = client.get(url + query)
        if response.status_code != 200:
            failures.append(f"{url}{query} -> {response.status_code}")
        if model_admin.has_add_permission(type("R", (), {"user": world.global_admin})()):
            add = client.get(reverse(f"admin:{info}_add"))
            if add.status_code != 200:
                failures.append(f"add {info} -> {add.status_code}")
    assert not failures, failures


def test_admin_needs_a_staff_login(world):
    response = Client().get("/admin/accounts/project/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    member = Client()
    member.force_login(world.member)
    assert member.get("/admin/accounts/project/").status_code == 302
