"""What every app's admin shares: actions that call a service per row, and model admins whose forms
run the service's own checks (so a value the service would refuse is a form error, not a 500)."""

from django import forms
from django.contrib import admin, messages

from config.actors import Actor
from config.errors import TetherError


def apply_to_each(modeladmin, request, ids, service, key: str, verb: str) -> None:
    """Run an admin action's service once per selected row (each in its own transaction), and tell
    the operator what was done and what was refused."""
    actor = Actor.for_user(request.user)
    done, failures = 0, []
    for value in ids:
        try:
            service(**{key: value}, actor=actor)
            done += 1
        except TetherError as exc:
            failures.append(f"{value}: {exc.message}")
    if done:
        modeladmin.message_user(request, f"{verb} {done}.", messages.SUCCESS)
    for failure in failures:
        modeladmin.message_user(request, failure, messages.ERROR)


class ServiceCheckedAdmin(admin.ModelAdmin):
    """An admin whose `save_model` calls a service: the service's checks run in the form's `clean()`
    too, so a value the service would refuse is shown on the form instead of failing the save."""

    def check_fields(self, data: dict, obj) -> None:  # each admin says what its service checks
        raise NotImplementedError

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        model_admin = self

        class Checked(form):
            def clean(self):
                data = super().clean()
                try:
                    model_admin.check_fields(data, obj)
                except TetherError as exc:
                    fields = {name: msgs for name, msgs in exc.details.items() if name in self.fields}
                    raise forms.ValidationError(
                        {name: [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])] for name, msgs in fields.items()}
                        if fields else exc.message
                    ) from None
                return data

        return Checked
