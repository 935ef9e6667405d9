"""Filters of the dashboard pages, as forms: a bad value gets a clear 400 with the form's message."""

from datetime import timezone as dt_timezone

from django import forms

from agents.models import Agent
from assignments.models import Assignment
from pools.models import Task
from config.validation import IDENTIFIER_RE
from dashboard.selectors import ASSIGNMENT_SORTS

MAX_PAGE = 10_000


def _identifier(label, required=False):
    return forms.RegexField(regex=IDENTIFIER_RE, required=required, label=label, max_length=128,
                            error_messages={"invalid": "letters, digits and . _ : @ - only"})


class UTCDateTimeField(forms.DateTimeField):
    """Times on the dashboard are UTC; a value without an offset is read as UTC."""

    input_formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]

    def to_python(self, value):
        if isinstance(value, str):
            value = value.strip()
            if value.endswith("Z"):
                value = value[:-1]
        result = super().to_python(value)
        return result.astimezone(dt_timezone.utc) if result else result


class PageForm(forms.Form):
    page = forms.IntegerField(required=False, min_value=1, max_value=MAX_PAGE)

    def page_number(self) -> int:
        return self.cleaned_data.get("page") or 1


class AssignmentFilterForm(PageForm):
    status = forms.ChoiceField(
        required=False,
        choices=[("live", "Live"), ("all", "All")] + list(Assignment.Status.choices),
    )
    pool = forms.SlugField(required=False, max_length=64)
    agent_id = _identifier("Agent")
    profile_id = forms.CharField(required=False, max_length=128, label="Profile")
    workflow_id = forms.CharField(required=False, max_length=200, label="Workflow")
    sort = forms.ChoiceField(required=False, choices=[(k, k) for k in ASSIGNMENT_SORTS])

    def filters(self) -> dict:
        d = self.cleaned_data
        return {
            "status": d.get("status") or "live",
            "pool": d.get("pool") or "",
            "agent_id": d.get("agent_id") or "",
            "profile_id": d.get("profile_id") or "",
            "workflow_id": d.get("workflow_id") or "",
            "sort": d.get("sort") or "newest",
        }


class AgentFilterForm(PageForm):
    pool = forms.SlugField(required=False, max_length=64)
    status = forms.ChoiceField(required=False, choices=[("", "Any")] + list(Agent.Status.choices))


class TaskFilterForm(PageForm):
    pool = forms.SlugField(required=False, max_length=64)
    status = forms.ChoiceField(required=False, choices=[("", "Open"), ("all", "All")] + list(Task.Status.choices))
    priority = forms.ChoiceField(required=False, choices=[("", "Any")] + list(Task.Priority.choices))


class ProfileFilterForm(PageForm):
    q = forms.CharField(required=False, max_length=128, label="Search")
    state = forms.ChoiceField(required=False, choices=[("", "Any"), ("held", "Held"), ("available", "Available")])
    pool = forms.SlugField(required=False, max_length=64)


class HistoryFilterForm(forms.Form):
    type = forms.RegexField(regex=r"^[a-z_]+\.(\*|[a-z_]*)$", required=False, max_length=64,
                            error_messages={"invalid": "an event type such as assignment.created, or a prefix such as assignment.*"})
    pool = forms.SlugField(required=False, max_length=64)
    agent_id = _identifier("Agent")
    profile_id = _identifier("Profile")
    since = UTCDateTimeField(required=False, label="From (UTC)")
    until = UTCDateTimeField(required=False, label="Until (UTC)")
    before = forms.IntegerField(required=False, min_value=1)
    after = forms.IntegerField(required=False, min_value=0)

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise forms.ValidationError("“From” must be before “Until”.")
        if data.get("before") is not None and data.get("after") is not None:
            raise forms.ValidationError("Give either before or after, not both.")
        return data

    def filters(self) -> dict:
        d = self.cleaned_data
        return {k: d.get(k) or ("" if k not in ("since", "until") else None)
                for k in ("type", "pool", "agent_id", "profile_id", "since", "until")}


class AsOfForm(forms.Form):
    as_of_profile = _identifier("Profile", required=True)
    as_of = UTCDateTimeField(required=True, label="At (UTC)")
