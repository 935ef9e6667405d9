"""Operators see who waits for a profile (profile and pool pages) and clear a quarantine."""

import pytest
from django.contrib.auth.models import User

from assignments.models import Alert, Profile
from assignments.profile_health import profile_report
from assignments.services import assignment_create
from assignments.takes import assignment_take
from tests.helpers import as_agent, make_agent, make_pool, make_profile


@pytest.fixture
def queue(db):
    pool = make_pool("qp")
    for name in ("holder", "w1", "w2"):
        make_agent(pool, name, capacity=2)
    make_profile("hot", pool="qp")
    assignment_create(profile_id="hot", agent_id="holder", actor=as_agent("holder"))
    for name in ("w1", "w2"):
        assignment_take(agent_id=name, profile_id="hot", actor=as_agent(name), wait_seconds=300)
    return pool


@pytest.fixture
def operator_client(client, db):
    user = User.objects.create_user("op", password=None, is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_the_profile_page_lists_its_waiting_requests_in_order(operator_client, queue):
    page = operator_client.get("/profiles/hot/").content.decode()
    assert "Waiting requests (2, fifo)" in page
    assert page.index("/agents/w1/") < page.index("/agents/w2/")
    assert "held by" in page and "holder" in page


def test_the_pools_page_counts_and_lists_waiting_requests(operator_client, queue):
    page = operator_client.get("/pools/").content.decode()
    assert "Requests waiting for a profile" in page
    assert page.count('href="/profiles/hot/"') == 2


def test_an_operator_clears_a_quarantine_from_the_dashboard_and_the_admin(operator_client, queue):
    profile_report(profile_id="hot", actor=as_agent("holder"), outcome="banned")
    assert "quarantined" in operator_client.get("/profiles/hot/").content.decode()
    response = operator_client.post("/profiles/hot/clear-quarantine/")
    assert response.status_code == 302
    assert not Profile.objects.get(profile_id="hot").quarantined
    assert Alert.objects.get(kind="profile_quarantined").status == "resolved"
    profile_report(profile_id="hot", actor=as_agent("holder"), outcome="banned")
    pk = Profile.objects.get(profile_id="hot").pk
    operator_client.post("/admin/assignments/profile/", {"action": "clear_quarantine", "_selected_action": [pk]})
    assert not Profile.objects.get(profile_id="hot").quarantined
