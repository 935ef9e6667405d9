"""The task admin is read-mostly: it lists tasks in a fixed number of queries, and its one action
cancels through the service (event named after the operator)."""

import pytest
from django.urls import reverse

from assignments.models import Event
from pools.models import Task
from pools.queue import task_submit
from tests.helpers import OPERATOR, make_pool

pytestmark = pytest.mark.django_db


def test_task_changelist_renders_with_a_fixed_number_of_queries(admin_client, django_assert_max_num_queries):
    make_pool("q")
    for i in range(20):
        task_submit(actor=OPERATOR, pool="q", task_id=f"t{i}")
    with django_assert_max_num_queries(12):
        response = admin_client.get("/admin/pools/task/")
    assert response.status_code == 200 and b"t19" in response.content


def test_cancel_action_goes_through_the_service_and_tasks_cannot_be_edited(admin_client):
    make_pool("q")
    task = task_submit(actor=OPERATOR, pool="q", task_id="t")
    response = admin_client.post(reverse("admin:pools_task_changelist"),
                                 {"action": "cancel", "_selected_action": [task.pk]}, follow=True)
    assert response.status_code == 200
    assert Task.objects.get(pk=task.pk).status == "cancelled"
    assert Event.objects.get(type="task.cancelled").actor == "user:admin"
    response = admin_client.post(reverse("admin:pools_task_change", args=[task.pk]), {"status": "queued"})
    assert response.status_code == 403 or Task.objects.get(pk=task.pk).status == "cancelled"
    assert Task.objects.get(pk=task.pk).status == "cancelled"
