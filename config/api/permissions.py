"""Who may call what. Services check again (agents act only as themselves; operator-only actions):
these give the API its early, uniform 401/403 before any work is done."""

from rest_framework import permissions

from config.api.authentication import request_actor


class IsAuthenticated(permissions.BasePermission):
    """Any credential: an agent's token, a user's token or a session. Anonymous → 401."""

    message = "authentication required: send 'Authorization: Token <key>'"

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated)


class IsOperator(permissions.BasePermission):
    """Staff users and members of the `operators` group. Agents and other users → 403."""

    message = "only an operator may do this"

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated) and request_actor(request).is_operator


class ReadAnyWriteOperator(permissions.BasePermission):
    """Reads for any credential, writes for operators (pools, profiles)."""

    message = "only an operator may do this"

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        return request_actor(request).is_operator
