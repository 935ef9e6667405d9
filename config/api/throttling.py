"""Throttling per credential (agent token, user), or per client address when anonymous.
A refused request gets 429 `throttled` with `Retry-After` (set by DRF from `wait()`)."""

from rest_framework.throttling import SimpleRateThrottle

from config.api.authentication import credential_scope


class CredentialRateThrottle(SimpleRateThrottle):
    scope = "credential"

    def get_cache_key(self, request, view):
        ident = credential_scope(request) or f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
