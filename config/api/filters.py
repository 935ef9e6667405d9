"""The base of the API's filter sets: a filter that is given is read strictly.

django-filter ignores a choice or boolean filter whose value is empty or not understood
(`?status=`, `?enabled=1822`), so the client gets every row as if it had not asked — a refusal
is due instead (400 `validation_error` naming the parameter), as the schema promises.
"""

import django_filters

_BOOLEANS = {"true", "false"}


class StrictFilterSet(django_filters.FilterSet):
    def is_valid(self):
        valid = super().is_valid()
        for name, problem in self._lenient_values():
            if name in self.form.fields:
                self.form.add_error(name, problem)
                valid = False
        return valid

    def _lenient_values(self):
        for name, spec in self.filters.items():
            if name not in self.data:
                continue
            value = self.data.get(name)
            if isinstance(spec, django_filters.BooleanFilter):
                if str(value).lower() not in _BOOLEANS:
                    yield name, "must be true or false"
            elif isinstance(spec, django_filters.ChoiceFilter) and not str(value).strip(" ,"):
                yield name, "may not be empty: leave the parameter out to match every value"
