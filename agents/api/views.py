from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import get_object_or_404
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from agents import selectors, services
from agents.api import documents
from agents.api.serializers import (
    AgentListSerializer,
    AgentRegisteredSerializer,
    AgentRegisterSerializer,
    AgentSerializer,
    AgentStatusSerializer,
    DiscoverSerializer,
    HeartbeatReplySerializer,
    HeartbeatSerializer,
)
from agents.filters import AgentFilter
from agents.models import Agent
from assignments.api.serializers import AssignmentSerializer, StatusQuerySerializer
from assignments.models import Assignment
from config.actors import Actor
from config.api.authentication import credential_scope, request_actor
from config.api.idempotency import idempotent
from config.api.permissions import IsAuthenticated, IsOperator
from config.api.schema import ENROLLMENT_TOKEN, IDEMPOTENCY_KEY
from config.api.views import APIView, ListAPIView
from config.errors import NotFound, ValidationFailed
from config.tokens import token_hash, token_matches
from pools.api.serializers import TaskSerializer
from pools.models import AgentPool
from pools.selectors import pool_by_name

ENROLLMENT_HEADER = "X-Enrollment-Token"


def _register_scope(request) -> str | None:
    enrollment = request.headers.get(ENROLLMENT_HEADER)
    if enrollment:
        hashed = token_hash(enrollment)
        # Only a real enrollment token gets answers remembered: a bogus one must not be able to
        # fill the idempotency table (its request goes on to a plain 403).
        if not AgentPool.objects.filter(enrollment_token_hash=hashed).exists():
            return None
        return f"enrollment:{hashed}"
    return credential_scope(request)


def _enrollment(request, pool_name: str, agent_id: str):
    """Who may register: the holder of the pool's enrollment token (acting as the agent itself), or
    an operator. Returns (pool, actor)."""
    enrollment = request.headers.get(ENROLLMENT_HEADER)
    if enrollment:
        pool = pool_by_name(pool_name)
        # The same answer for an unknown pool and a wrong token: the token is what is being checked.
        if pool is None or not token_matches(enrollment, pool.enrollment_token_hash):
            raise exceptions.PermissionDenied(f"the enrollment token is not valid for pool {pool_name!r}")
        # Acting as the agent itself: `agent_register` refuses it another pool's agent (only an
        # operator may move one), checked under the agent's row lock.
        return pool, Actor.for_agent(agent_id)
    if not (request.user and request.user.is_authenticated):
        raise exceptions.NotAuthenticated(f"send the pool's enrollment token in {ENROLLMENT_HEADER}, or an operator's credential")
    actor = request_actor(request)
    if not actor.is_operator:
        raise exceptions.PermissionDenied(f"registering needs the pool's enrollment token ({ENROLLMENT_HEADER}) or an operator")
    pool = pool_by_name(pool_name)
    if pool is None:
        raise ValidationFailed(f"pool {pool_name!r} does not exist", details={"pool": ["unknown pool"]})
    return pool, actor


class AgentListView(ListAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = AgentSerializer
    filterset_class = AgentFilter

    def get_queryset(self):
        return selectors.agent_list()


class AgentRegisterView(APIView):
    """`POST /api/agents/register`: register, or register again (idempotent by agent_id)."""

    permission_classes = [AllowAny]  # checked in `_enrollment`: an enrollment token or an operator
    error_codes = {"post": [409, 422]}

    @extend_schema(
        request=AgentRegisterSerializer,
        responses={201: AgentRegisteredSerializer},
        parameters=[ENROLLMENT_TOKEN, IDEMPOTENCY_KEY],
    )
    @idempotent(_register_scope)
    def post(self, request):
        data = AgentRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        agent_id, pool_name = fields.pop("agent_id"), fields.pop("pool")
        pool, actor = _enrollment(request, pool_name, agent_id)
        agent, token = services.agent_register(pool=pool, agent_id=agent_id, actor=actor, **fields)
        agent.pool = pool
        return Response(AgentSerializer(agent).data | {"token": token}, status=status.HTTP_201_CREATED)


class AgentDiscoverView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=DiscoverSerializer, responses={200: AgentListSerializer})
    def post(self, request):
        data = DiscoverSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        document = documents.discover_document(**data.validated_data)
        if document is not None:
            return HttpResponse(document, content_type="application/json")
        agents = selectors.agent_discover(**data.validated_data)
        results = AgentSerializer(agents, many=True).data
        return Response({"count": len(results), "next": None, "previous": None, "results": results})


class AgentDetailView(APIView):
    permission_classes = [IsAuthenticated]
    error_codes = {"delete": [409]}

    @extend_schema(responses={200: AgentSerializer})
    def get(self, request, agent_id):
        missing = NotFound(f"agent {agent_id!r} does not exist", details={"agent_id": agent_id})
        try:
            document = documents.agent_document(agent_id)
        except documents.NoSuchAgent:
            raise missing from None
        if document is not None:
            return HttpResponse(document, content_type="application/json")
        agent = selectors.agent_get(agent_id)
        if agent is None:
            raise missing
        return Response(AgentSerializer(agent).data)

    @extend_schema(responses={200: AgentSerializer})
    def delete(self, request, agent_id):
        """Deregister (the agent itself or an operator): its token stops working, its assignments fail over."""
        agent = services.agent_deregister(agent_id=agent_id, actor=request_actor(request))
        return Response(AgentSerializer(agent).data)


class AgentHeartbeatView(APIView):
    permission_classes = [IsAuthenticated]
    error_codes = {"post": [409]}

    @extend_schema(request=HeartbeatSerializer, responses={200: HeartbeatReplySerializer})
    def post(self, request, agent_id):
        data = HeartbeatSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.agent_heartbeat(
            agent_id=agent_id,
            actor=request_actor(request),
            load_metrics=data.validated_data.get("load_metrics"),
            reported=data.validated_data.get("assignments"),
            running_profiles=data.validated_data.get("running_profiles"),
        )
        return Response(
            {
                "status": result.agent.status,
                "health_score": result.agent.health_score,
                "revoked": [str(a) for a in result.revoked],
                "assigned": [str(a) for a in result.assigned],
                "tasks": TaskSerializer(result.tasks, many=True).data,
                "stop_profiles": result.stop_profiles,
            }
        )


class AgentStatusView(APIView):
    permission_classes = [IsAuthenticated]
    error_codes = {"put": [409]}

    @extend_schema(request=AgentStatusSerializer, responses={200: AgentSerializer})
    def put(self, request, agent_id):
        data = AgentStatusSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent = services.agent_set_status(agent_id=agent_id, actor=request_actor(request), **data.validated_data)
        return Response(AgentSerializer(agent).data)


class AgentDrainView(APIView):
    permission_classes = [IsOperator]
    error_codes = {"post": [409]}

    @extend_schema(request=None, responses={200: AgentSerializer})
    def post(self, request, agent_id):
        agent = services.agent_drain(agent_id=agent_id, actor=request_actor(request))
        return Response(AgentSerializer(agent).data)


class AgentAssignmentsView(ListAPIView):
    """An agent's assignments: live ones by default, `?status=all` or `?status=released,failed`."""

    permission_classes = [IsAuthenticated]
    serializer_class = AssignmentSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, description="comma-separated statuses, or `all`; default: the live ones")
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Assignment.objects.none()
        agent = get_object_or_404(Agent.objects.all(), agent_id=self.kwargs["agent_id"])
        query = StatusQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        statuses = query.validated_data.get("status")
        if statuses is None:
            statuses = list(Assignment.LIVE_STATUSES)
        return selectors.agent_assignments(agent, statuses)
