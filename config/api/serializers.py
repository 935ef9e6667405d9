"""The base of every serializer that reads a JSON body: what a client sends is taken as it is sent.

- A field the serializer does not know is refused by name (400 `validation_error`), so a client
  learns at once that a field it sends does nothing (DESIGN.md, "REST API").
- A value must already have its JSON type: no `"10"` for a whole number, no `1` for a UUID or a
  string, no `"true"` for a boolean (DRF coerces all of these by default).

Query strings are text by nature: their serializers stay plain `serializers.Serializer`s.
"""

import copy
from collections.abc import Mapping

from rest_framework import serializers

from config.validation import MAX_JSON_INT


def _type_problem(field: serializers.Field, value) -> str | None:
    """Why `value` is not of the JSON type `field` reads, or None when it is."""
    if value is None:
        return None  # DRF's own check says whether null is allowed
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(field, serializers.IntegerField):
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        return None
    if isinstance(field, (serializers.FloatField, serializers.DecimalField)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if isinstance(value, int) and abs(value) > MAX_JSON_INT:
            return "is out of range"
        return None
    if isinstance(field, (serializers.CharField, serializers.ChoiceField, serializers.UUIDField)):
        return None if isinstance(value, str) else "must be a string"
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return None  # DRF's own check: "expected a list"
        for item in value:
            problem = _type_problem(field.child, item)
            if problem:
                return f"each item {problem}"
        return None
    return None


def _shares_safely(field: serializers.Field) -> bool:
    """Whether a shallow copy of this field can be bound and used beside others: plain fields keep
    their per-instance state (name, parent) in their own attributes; a nested serializer, or a list
    or dict of them, carries bound fields of its own."""
    child = getattr(field, "child", None)
    return not isinstance(field, serializers.BaseSerializer) and (child is None or _shares_safely(child))


class StrictInputSerializer(serializers.Serializer):
    """A JSON request body, read strictly (see the module docstring)."""

    def get_fields(self):
        # DRF deep-copies every declared field for every instance: ~0.1 ms of a take's 0.14 ms of
        # validation (its ten fields), on every request with a body. Here a class's fields are
        # deep-copied once, and each instance binds shallow copies of them (a nested serializer
        # still gets a deep copy of its own).
        prototypes = type(self).__dict__.get("_prototype_fields")
        if prototypes is None:
            prototypes = super().get_fields()
            type(self)._prototype_fields = prototypes
        return {
            name: copy.copy(field) if _shares_safely(field) else copy.deepcopy(field)
            for name, field in prototypes.items()
        }

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError(
                    {name[:100]: ["unknown field"] for name in unknown[:20]}
                )
            errors = {}
            for name, value in data.items():
                problem = _type_problem(self.fields[name], value)
                if problem:
                    errors[name] = [problem]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class QuerySerializer(serializers.Serializer):
    """The base of serializers that read a query string: a parameter given empty (`?window=`) is
    refused, not taken as absent (DRF reads query strings as HTML forms, where empty means unset)."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            empty = [
                name for name, field in self.fields.items()
                if name in data and data.get(name) == "" and not getattr(field, "allow_blank", False)
            ]
            if empty:
                raise serializers.ValidationError(
                    {name: ["may not be empty: leave the parameter out instead"] for name in empty}
                )
        return super().to_internal_value(data)
