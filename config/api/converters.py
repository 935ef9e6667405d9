"""Path segments: only strings that can be ids reach a view; anything else (NUL bytes, odd unicode,
over-long) is a 404 from the URL resolver, before any query."""

# The same alphabet as config.validation.IDENTIFIER_RE.
IDENTIFIER = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"
UUID = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


def route(pattern: str, view, name: str):
    """`pattern` with no trailing slash; one is accepted too (DESIGN.md)."""
    from django.urls import re_path

    pattern = pattern.replace("{id}", IDENTIFIER).replace("{uuid}", UUID)
    return re_path(rf"^{pattern}/?$", view, name=name)
