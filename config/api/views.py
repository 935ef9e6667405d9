"""Base classes for the API's views: query strings are checked for NUL bytes and invalid unicode
before any filter touches the database (PostgreSQL refuses them with an error, not a miss)."""

from rest_framework import generics
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView as DRFAPIView

from config.api.parsers import check_text


class SafeQueryMixin:
    def initial(self, request, *args, **kwargs):
        for name, values in request.query_params.lists():
            for value in [name, *values]:
                try:
                    check_text(value, f"query parameter {name[:50]!r}")
                except ParseError as exc:
                    raise ValidationError({"query": [str(exc.detail)]}) from None
        super().initial(request, *args, **kwargs)


class APIView(SafeQueryMixin, DRFAPIView):
    pass


class ListAPIView(SafeQueryMixin, generics.ListAPIView):
    pass


class DecoratedListMixin:
    """Lets a list view add what a page needs in a fixed number of queries (`decorate(objects)`)."""

    def decorate(self, objects: list) -> None:
        pass

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        objects = list(page) if page is not None else list(queryset)
        self.decorate(objects)
        data = self.get_serializer(objects, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)
