"""Lists are `{"count", "next", "previous", "results"}` (DESIGN.md)."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_number(self, request, paginator):
        """A page that is not a number is bad input (400); a number past the end stays a 404."""
        number = super().get_page_number(request, paginator)
        if number in self.last_page_strings:
            return number
        if not (isinstance(number, int) or (isinstance(number, str) and number.isdigit() and int(number) >= 1)):
            raise ValidationError({self.page_query_param: ["must be a whole number from 1"]})
        return number

    def get_page_size(self, request):
        """`page_size` out of 1–max_page_size, or not a number, is bad input (DRF would quietly use
        another size)."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isdigit() and 1 <= int(raw) <= self.max_page_size):
            raise ValidationError({self.page_size_query_param: [f"must be a whole number from 1 to {self.max_page_size}"]})
        return int(raw)

    def get_schema_operation_parameters(self, view):
        """As DRF's, with the bounds this class enforces (a schema that allowed `page=0` would
        promise an answer the view refuses)."""
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
                parameter["description"] = f"results per page (default {self.page_size}, at most {self.max_page_size})"
        return parameters
