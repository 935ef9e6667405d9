"""Operator actions on the dashboard. Each is a GET that shows what will happen (the confirmation
step, usable without JavaScript) and a POST with CSRF that does it through the same service as the
API, acting as `Actor.for_user(request.user)` — so the event names the operator, and every open page
sees the result through the event stream. Viewers (logged in, not operators) get 403.
"""

from dataclasses import dataclass
from typing import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from agents.models import Agent
from agents.services import agent_drain, agent_mark_stale
from assignments.alerts import alert_acknowledge
from assignments.models import Alert, Assignment, Profile
from assignments.profile_health import profile_quarantine_clear
from assignments.services import assignment_release
from config.actors import Actor, user_is_operator
from pools.models import AgentPool, Task
from pools.queue import queue_clear, task_cancel, task_resubmit
from config.errors import TetherError


@dataclass
class Action:
    title: str  # "Force-release assignment"
    button: str  # "Force-release"
    explanation: str
    subject: object
    perform: Callable[[Actor], object]
    done: str  # flash message after success
    back: str  # where to go afterwards by default
    danger: bool = True


def _next_url(request, default: str) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                                     require_https=request.is_secure()):
        return candidate
    return default


def _run(request, action: Action):
    if not user_is_operator(request.user):
        raise PermissionDenied("only operators may do this")
    next_url = _next_url(request, action.back)
    context = {"action": action, "next": next_url, "is_operator": True}
    if request.method == "GET":
        return render(request, "dashboard/confirm.html", context)
    try:
        action.perform(Actor.for_user(request.user))
    except TetherError as exc:
        context["error"] = exc
        return render(request, "dashboard/confirm.html", context, status=exc.http_status)
    messages.success(request, action.done)
    return HttpResponseRedirect(next_url)


def _assignment(assignment_id) -> Assignment:
    assignment = Assignment.objects.select_related("profile", "pool", "agent").filter(assignment_id=assignment_id).first()
    if assignment is None:
        raise Http404("no such assignment")
    return assignment


def _agent(agent_id) -> Agent:
    agent = Agent.objects.select_related("pool").filter(agent_id=agent_id).first()
    if agent is None:
        raise Http404("no such agent")
    return agent


@login_required
@require_http_methods(["GET", "POST"])
def assignment_force_release(request, assignment_id):
    if not user_is_operator(request.user):
        raise PermissionDenied("only operators may force-release")
    a = _assignment(assignment_id)
    holder = a.agent.agent_id if a.agent_id else "no agent (waiting)"
    return _run(request, Action(
        title="Force-release assignment",
        button="Force-release",
        explanation=(
            f"Profile {a.profile.profile_id}, held by {holder} in pool {a.pool.name}, is {a.status}. "
            "If its agent is alive it is told to let go (releasing, then released when it confirms); "
            "otherwise it is released at once."
        ),
        subject=a,
        perform=lambda actor: assignment_release(assignment_id=a.assignment_id, actor=actor),
        done=f"Release of {a.profile.profile_id} requested.",
        back="/assignments/",
    ))


@login_required
@require_http_methods(["GET", "POST"])
def agent_drain_view(request, agent_id):
    if not user_is_operator(request.user):
        raise PermissionDenied("only operators may drain agents")
    agent = _agent(agent_id)
    return _run(request, Action(
        title="Drain agent",
        button="Drain",
        explanation=(
            f"Agent {agent.agent_id} ({agent.pool.name}, {agent.status}) stops getting new work; its live "
            "assignments move to healthy agents of its pool (or wait for one), then it becomes inactive."
        ),
        subject=agent,
        perform=lambda actor: agent_drain(agent_id=agent.agent_id, actor=actor),
        done=f"Agent {agent.agent_id} drained.",
        back=f"/agents/{agent.agent_id}/",
    ))


@login_required
@require_http_methods(["GET", "POST"])
def agent_mark_stale_view(request, agent_id):
    if not user_is_operator(request.user):
        raise PermissionDenied("only operators may mark agents stale")
    agent = _agent(agent_id)
    return _run(request, Action(
        title="Mark agent stale",
        button="Mark stale",
        explanation=(
            f"Agent {agent.agent_id} ({agent.pool.name}, {agent.status}) is declared lost: its health drops "
            "and its live assignments fail over inside its pool. A heartbeat from it makes it active again."
        ),
        subject=agent,
        perform=lambda actor: agent_mark_stale(agent_id=agent.agent_id, actor=actor,
                                               reason=f"marked stale by {request.user.get_username()}"),
        done=f"Agent {agent.agent_id} marked stale.",
        back=f"/agents/{agent.agent_id}/",
    ))


@login_required
@require_http_methods(["GET", "POST"])
def alert_acknowledge_view(request, alert_id):
    if not user_is_operator(request.user):
        raise PermissionDenied("only operators may acknowledge alerts")
    alert = Alert.objects.filter(alert_id=alert_id).first()
    if alert is None:
        raise Http404("no such alert")
    return _run(request, Action(
        title="Acknowledge alert",
        button="Acknowledge",
        explanation=f"“{alert.message}” ({alert.get_kind_display()}, {alert.status}) — say you are on it. "
                    "It stays listed until its condition clears.",
        subject=alert,
        perform=lambda actor: alert_acknowledge(alert_id=alert.alert_id, actor=actor),
        done="Alert acknowledged.",
        back="/",
        danger=False,
    ))


@login_required
@require_http_methods(["GET", "POST"])
def profile_quarantine_clear_view(request, profile_id):
    if not user_is_operator(request.user):
        raise PermissionDenied("only operators may clear a quarantine")
    profile = Profile.objects.filter(profile_id=profile_id).first()
    if profile is None:
        raise Http404(f"profile {profile_id!r} does not exist")
    return _run(request, Action(
        title="Clear quarantine",
        button="Clear quarantine",
        explanation=(
            f"Profile {profile.profile_id} was quarantined ({profile.quarantine_reason or 'reported banned'}). "
            "Cleared, it may be taken and selected again, with its health reset to 1, and its alert is resolved."
        ),
        subject=profile,
        perform=lambda actor: profile_quarantine_clear(profile_id=profile.profile_id, actor=actor),
        done=f"Quarantine of {profile.profile_id} cleared.",
        back=f"/profiles/{profile.profile_id}/",
        danger=False,
    ))


@login_required
@require_http_methods(["GET", "POST"])
def task_cancel_view(request, task_id):
    if not user_is_operator(request.user):
        raise PermissionDenied("only operators may cancel tasks")
    task = Task.objects.select_related("pool", "agent").filter(task_id=task_id).first()
    if task is None:
        raise Http404("no such task")
    holder = f", assigned to {task.agent.agent_id}" if task.agent_id and task.status == Task.Status.ASSIGNED else ""
    return _run(request, Action(
        title="Cancel task",
        button="Cancel task",
        explanation=(
            f"Task {task.task_id} ({task.priority}, pool {task.pool.name}) is {task.status}{holder}. "
            "It will not run; a profile it holds is released. Running and finished tasks cannot be cancelled."
        ),
        subject=task,
        perform=lambda actor: task_cancel(task_id=task.task_id, actor=actor),
        done=f"Task {task.task_id} cancelled.",
        back="/tasks/",
    ))


@login_required
@require_http_methods(["GET", "POST"])
def queue_clear_view(request, priority):
    if not user_is_operator(request.user):
        raise PermissionDenied("only operators may clear queues")
    if priority not in Task.Priority.values:
        raise Http404("no such priority")
    pool = request.POST.get("pool") or request.GET.get("pool") or None
    if pool is not None and not AgentPool.objects.filter(name=pool).exists():
        raise Http404("no such pool")
    queued = Task.objects.filter(status=Task.Status.QUEUED, priority=priority)
    if pool:
        queued = queued.filter(pool__name=pool)
    where = f"pool {pool}" if pool else "every pool"
    return _run(request, Action(
        title=f"Clear the {priority} queue",
        button="Clear queue",
        explanation=(
            f"The {queued.count()} queued {priority} task(s) of {where} are cancelled (each recorded). "
            "Tasks already assigned or running are not touched."
        ),
        subject=priority,
        perform=lambda actor: queue_clear(priority=priority, pool=pool, actor=actor),
        done=f"{priority} queue of {where} cleared.",
        back="/tasks/",
    ))


@login_required
@require_http_methods(["GET", "POST"])
def task_resubmit_view(request, task_id):
    if not user_is_operator(request.user):
        raise PermissionDenied("only operators may resubmit tasks")
    task = Task.objects.select_related("pool").filter(task_id=task_id).first()
    if task is None:
        raise Http404("no such task")
    return _run(request, Action(
        title="Resubmit task",
        button="Resubmit",
        explanation=(
            f"Task {task.task_id} ({task.priority}, pool {task.pool.name}) is {task.status}"
            f"{': ' + task.error[:200] if task.error else ''}. A new task with the same payload and "
            "requirements is queued; this one stays as it is."
        ),
        subject=task,
        perform=lambda actor: task_resubmit(task_id=task.task_id, actor=actor),
        done=f"Task {task.task_id} resubmitted.",
        back="/tasks/",
        danger=False,
    ))
