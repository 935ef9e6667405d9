from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response

from assignments import profile_health, selectors, services, takes, waits
from assignments.alerts import alert_acknowledge, alert_resolve
from assignments.api.serializers import (
    AlertResolveSerializer,
    AlertSerializer,
    AssignmentCreateSerializer,
    AssignmentSerializer,
    AssignmentsTakenSerializer,
    AssignmentUpdateSerializer,
    EventPageSerializer,
    EventQuerySerializer,
    MetricsQuerySerializer,
    MetricsSerializer,
    ProfileAssignmentSerializer,
    ProfileCreateSerializer,
    ProfileCreateSerializer,
    ProfileReleaseSerializer,
    ProfileReportSerializer,
    ProfileSerializer,
    QuarantineClearSerializer,
    ReleaseQuerySerializer,
    ReleaseSerializer,
)
from assignments.events import event_payload
from assignments.filters import AlertFilter, AssignmentFilter, ProfileFilter
from config.api.authentication import credential_scope, request_actor, request_agent
from config.api.idempotency import idempotent
from config.api.permissions import IsAuthenticated, IsOperator, ReadAnyWriteOperator
from config.api.schema import IDEMPOTENCY_KEY
from config.api.views import APIView, ListAPIView
from config.errors import NotFound

# --- Profiles ------------------------------------------------------------------------------------


class ProfileListCreateView(ListAPIView):
    """`GET /api/profiles` (any credential), `POST /api/profiles` (operators)."""

    permission_classes = [ReadAnyWriteOperator]
    serializer_class = ProfileSerializer
    filterset_class = ProfileFilter
    error_codes = {"post": [409]}

    def get_queryset(self):
        return selectors.profile_list()

    @extend_schema(request=ProfileCreateSerializer, responses={201: ProfileSerializer})
    def post(self, request):
        data = ProfileCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        profile = services.profile_create(actor=request_actor(request), **data.validated_data)
        return Response(ProfileSerializer(profile).data, status=status.HTTP_201_CREATED)


class ProfileDetailView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: ProfileSerializer})
    def get(self, request, profile_id):
        return Response(ProfileSerializer(get_object_or_404(selectors.profile_list(), profile_id=profile_id)).data)


class ProfileAssignmentView(APIView):
    """Who holds this profile now: `{"profile_id", "available", "assignment"}`."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: ProfileAssignmentSerializer})
    def get(self, request, profile_id):
        exists, live = selectors.profile_assignment(profile_id)
        if not exists:
            raise NotFound(f"profile {profile_id!r} does not exist", details={"profile_id": profile_id})
        return Response(
            {
                "profile_id": profile_id,
                "available": live is None,
                "assignment": AssignmentSerializer(live).data if live is not None else None,
            }
        )


class ProfileReleaseView(APIView):
    """`POST /api/profiles/{profile_id}/release` `{"agent_id"}`: release by profile, with the rules
    of `DELETE /api/assignments/{id}` (holder or operator; idempotent; operator on a live agent →
    releasing)."""

    permission_classes = [IsAuthenticated]
    error_codes = {"post": [409]}

    @extend_schema(request=ProfileReleaseSerializer, responses={200: AssignmentSerializer})
    def post(self, request, profile_id):
        data = ProfileReleaseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        if "agent_id" not in fields:
            agent = request_agent(request)
            if agent is None:
                raise exceptions.ValidationError({"agent_id": ["This field is required."]})
            fields["agent_id"] = agent.agent_id
        assignment = services.assignment_release_for_profile(
            profile_id=profile_id, actor=request_actor(request), **fields
        )
        return Response(AssignmentSerializer(assignment).data)


class ProfileReportView(APIView):
    """`POST /api/profiles/{profile_id}/report`: its holder (or the agent that held it last, or an
    operator) says how it fared; `banned` quarantines it."""

    permission_classes = [IsAuthenticated]
    error_codes = {"post": [403, 404]}

    @extend_schema(request=ProfileReportSerializer, responses={200: ProfileSerializer})
    def post(self, request, profile_id):
        data = ProfileReportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        profile = profile_health.profile_report(profile_id=profile_id, actor=request_actor(request), **data.validated_data)
        return Response(ProfileSerializer(profile).data)


class ProfileQuarantineClearView(APIView):
    """`POST /api/profiles/{profile_id}/clear-quarantine` (operators)."""

    permission_classes = [IsAuthenticated]
    error_codes = {"post": [403, 404]}

    @extend_schema(request=QuarantineClearSerializer, responses={200: ProfileSerializer})
    def post(self, request, profile_id):
        data = QuarantineClearSerializer(data=request.data if request.data else {})
        data.is_valid(raise_exception=True)
        profile = profile_health.profile_quarantine_clear(
            profile_id=profile_id, actor=request_actor(request), **data.validated_data
        )
        return Response(ProfileSerializer(profile).data)


# --- Assignments ---------------------------------------------------------------------------------


class AssignmentListCreateView(ListAPIView):
    """`GET /api/assignments` (filters), `POST /api/assignments` (take a profile)."""

    permission_classes = [IsAuthenticated]
    serializer_class = AssignmentSerializer
    filterset_class = AssignmentFilter
    error_codes = {"post": [409, 422]}

    def get_queryset(self):
        return selectors.assignment_list()

    @extend_schema(
        request=AssignmentCreateSerializer,
        responses={201: AssignmentSerializer, 202: AssignmentSerializer},
        parameters=[IDEMPOTENCY_KEY],
        description="201 with the assignment (or `{\"assignments\": [...]}` for `profile_ids`); 202 with a "
        "pending assignment and its `queue_position` when it waits (`wait_seconds`).",
    )
    @idempotent(credential_scope)
    def post(self, request):
        data = AssignmentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        if "agent_id" not in fields:
            agent = request_agent(request)
            if agent is None:
                raise exceptions.ValidationError({"agent_id": ["This field is required."]})
            fields["agent_id"] = agent.agent_id
        several = "profile_ids" in fields
        result = takes.assignment_take(actor=request_actor(request), **fields)
        if several:
            return Response(AssignmentsTakenSerializer({"assignments": result.assignments}).data, status=status.HTTP_201_CREATED)
        code = status.HTTP_202_ACCEPTED if result.queued else status.HTTP_201_CREATED
        return Response(AssignmentSerializer(result.assignments[0]).data, status=code)


class AssignmentDetailView(APIView):
    permission_classes = [IsAuthenticated]
    error_codes = {"patch": [409], "delete": [409]}

    @extend_schema(responses={200: AssignmentSerializer})
    def get(self, request, assignment_id):
        assignment = get_object_or_404(selectors.assignment_list(), assignment_id=assignment_id)
        assignment.queue_position = waits.queue_position(assignment)
        return Response(AssignmentSerializer(assignment).data)

    @extend_schema(request=AssignmentUpdateSerializer, responses={200: AssignmentSerializer})
    def patch(self, request, assignment_id):
        """The holder (or an operator): status active/idle (or failed, with `error`), metadata,
        platform_resource_id; a given `fencing_token` must be current."""
        data = AssignmentUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        actor = request_actor(request)
        if fields.get("status") == "failed":
            assignment = services.assignment_fail(
                assignment_id=assignment_id, actor=actor, error=fields.get("error", ""),
                fencing_token=fields.get("fencing_token"),
            )
        else:
            assignment = services.assignment_update(assignment_id=assignment_id, actor=actor, **fields)
        return Response(AssignmentSerializer(assignment).data)

    @extend_schema(
        request=ReleaseSerializer,
        responses={200: AssignmentSerializer},
        parameters=[OpenApiParameter("fencing_token", int, description="as in the body; checked when given")],
    )
    def delete(self, request, assignment_id):
        """Release (idempotent). An operator releasing one whose agent is alive makes it `releasing`."""
        body = request.data if isinstance(request.data, dict) and request.data else {}
        if not body and "fencing_token" in request.query_params:
            data = ReleaseQuerySerializer(data={"fencing_token": request.query_params["fencing_token"]})
        else:
            data = ReleaseSerializer(data=body)
        data.is_valid(raise_exception=True)
        assignment = services.assignment_release(
            assignment_id=assignment_id, actor=request_actor(request), **data.validated_data
        )
        return Response(AssignmentSerializer(assignment).data)


class AssignmentMetricsView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[MetricsQuerySerializer], responses={200: MetricsSerializer})
    def get(self, request):
        query = MetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        metrics = selectors.assignment_metrics(window_seconds=query.validated_data["window"])
        return Response(MetricsSerializer(metrics).data)


# --- Events --------------------------------------------------------------------------------------


class EventListView(APIView):
    """The event log in `seq` order, from `since` (exclusive): gap-free (invariant 4)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[EventQuerySerializer], responses={200: EventPageSerializer})
    def get(self, request):
        query = EventQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        events = selectors.event_list(
            since=q["since"], limit=q["limit"], types=q.get("types"), pool=q.get("pool"),
            agent_id=q.get("agent_id"), profile_id=q.get("profile_id"),
        )
        last_seq = events[-1].seq if events else q["since"]
        next_url = None
        if len(events) == q["limit"]:
            params = request.query_params.copy()
            params["since"] = str(last_seq)
            next_url = request.build_absolute_uri(request.path) + "?" + urlencode(sorted(params.items()))
        return Response(
            {"next": next_url, "previous": None, "last_seq": last_seq, "results": [event_payload(e) for e in events]}
        )


# --- Alerts --------------------------------------------------------------------------------------


class AlertListView(ListAPIView):
    """`GET /api/alerts`, newest first; filters `status` (or `unresolved`), `kind`, `pool`."""

    permission_classes = [IsAuthenticated]
    serializer_class = AlertSerializer
    filterset_class = AlertFilter

    def get_queryset(self):
        return selectors.alert_queryset()


class AlertAcknowledgeView(APIView):
    """Operators: open → acknowledged (an acknowledged or resolved alert is left as it is)."""

    permission_classes = [IsOperator]

    @extend_schema(request=None, responses={200: AlertSerializer})
    def post(self, request, alert_id):
        return Response(AlertSerializer(alert_acknowledge(alert_id=alert_id, actor=request_actor(request))).data)


class AlertResolveView(APIView):
    """Operators: open or acknowledged → resolved, with an optional `reason` (a resolved alert is
    left as it is)."""

    permission_classes = [IsOperator]

    @extend_schema(request=AlertResolveSerializer, responses={200: AlertSerializer})
    def post(self, request, alert_id):
        data = AlertResolveSerializer(data=request.data if request.data else {})
        data.is_valid(raise_exception=True)
        alert = alert_resolve(alert_id=alert_id, actor=request_actor(request), **data.validated_data)
        return Response(AlertSerializer(alert).data)
