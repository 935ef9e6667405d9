"""The cross-cutting pieces of the REST API, in one place: authentication, permissions, the error
shape, parsing limits, throttling, idempotency, pagination and the schema helpers. The endpoints
themselves live in each app's `api/` package and stay thin."""
