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
