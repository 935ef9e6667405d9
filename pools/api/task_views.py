"""The task API (DESIGN.md, "Tasks: priority queues and distribution"): thin views over
`pools.queue` (writes), `pools.dispatch` (claims) and `pools.selectors` (reads)."""

import time

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response

from config.api.authentication import credential_scope, request_actor
from config.api.idempotency import idempotent
from config.api.permissions import IsAuthenticated, IsOperator
from config.api.schema import IDEMPOTENCY_KEY
from config.api.views import APIView, ListAPIView, request_received
from config.errors import NotFound
from pools import dispatch, queue, selectors
from pools.api.serializers import (
    AttemptSerializer,
    ClaimSerializer,
    ClearedSerializer,
    CompleteSerializer,
    EmptySerializer,
    FailSerializer,
    PoolQuerySerializer,
    QueuesSerializer,
    QueueStatsSerializer,
    TaskBatchSerializer,
    TaskListSerializer,
    TaskSerializer,
    TaskStatusSerializer,
    TaskSubmitSerializer,
)
from pools.filters import TaskFilter
from pools.models import AgentPool


def _submit(request) -> Response:
    data = TaskSubmitSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    task = queue.task_submit(actor=request_actor(request), **data.validated_data)
    return Response(TaskSerializer(task).data, status=status.HTTP_201_CREATED)


class TaskListSubmitView(ListAPIView):
    """`GET /api/tasks` (filters), `POST /api/tasks` and its alias `POST /api/tasks/submit`."""

    permission_classes = [IsAuthenticated]
    serializer_class = TaskSerializer
    filterset_class = TaskFilter
    error_codes = {"post": [409, 422]}

    def get_queryset(self):
        return selectors.task_list()

    @extend_schema(request=TaskSubmitSerializer, responses={201: TaskSerializer}, parameters=[IDEMPOTENCY_KEY])
    @idempotent(credential_scope)
    def post(self, request):
        return _submit(request)


class TaskSubmitView(APIView):
    """`POST /api/tasks/submit`: the seed's name for `POST /api/tasks`."""

    permission_classes = [IsAuthenticated]
    error_codes = {"post": [409, 422]}

    @extend_schema(request=TaskSubmitSerializer, responses={201: TaskSerializer}, parameters=[IDEMPOTENCY_KEY])
    @idempotent(credential_scope)
    def post(self, request):
        return _submit(request)


class TaskBatchView(APIView):
    """`POST /api/tasks/batch` `{"tasks": [...]}`: up to 500, all or nothing."""

    permission_classes = [IsAuthenticated]
    error_codes = {"post": [409, 422]}

    @extend_schema(request=TaskBatchSerializer, responses={201: TaskListSerializer}, parameters=[IDEMPOTENCY_KEY])
    @idempotent(credential_scope)
    def post(self, request):
        data = TaskBatchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tasks = queue.task_submit_batch(
            actor=request_actor(request), tasks=[dict(t) for t in data.validated_data["tasks"]]
        )
        return Response({"tasks": TaskSerializer(tasks, many=True).data}, status=status.HTTP_201_CREATED)


class TaskDetailView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: TaskSerializer})
    def get(self, request, task_id):
        return Response(TaskSerializer(get_object_or_404(selectors.task_list(), task_id=task_id)).data)


class _TaskActionView(APIView):
    permission_classes = [IsAuthenticated]
    error_codes = {"post": [409]}
    input_serializer = AttemptSerializer

    def act(self, actor, task_id, fields):
        raise NotImplementedError

    def post(self, request, task_id):
        data = self.input_serializer(data=request.data if request.data else {})
        data.is_valid(raise_exception=True)
        task = self.act(request_actor(request), task_id, dict(data.validated_data))
        return Response(TaskSerializer(task).data)


class TaskStartView(_TaskActionView):
    @extend_schema(request=AttemptSerializer, responses={200: TaskSerializer})
    def post(self, request, task_id):
        return super().post(request, task_id)

    def act(self, actor, task_id, fields):
        return queue.task_start(task_id=task_id, actor=actor, **fields)


class TaskCompleteView(_TaskActionView):
    input_serializer = CompleteSerializer

    @extend_schema(request=CompleteSerializer, responses={200: TaskSerializer})
    def post(self, request, task_id):
        return super().post(request, task_id)

    def act(self, actor, task_id, fields):
        return queue.task_complete(task_id=task_id, actor=actor, **fields)


class TaskFailView(_TaskActionView):
    input_serializer = FailSerializer

    @extend_schema(request=FailSerializer, responses={200: TaskSerializer})
    def post(self, request, task_id):
        return super().post(request, task_id)

    def act(self, actor, task_id, fields):
        return queue.task_fail(task_id=task_id, actor=actor, **fields)


class TaskCancelView(APIView):
    """Operators and the submitter: a queued or assigned task is cancelled."""

    permission_classes = [IsAuthenticated]
    error_codes = {"post": [409]}

    @extend_schema(request=None, responses={200: TaskSerializer})
    def post(self, request, task_id):
        # Nothing to send: any field in a body would do nothing, so it is refused.
        EmptySerializer(data=request.data if request.data else {}).is_valid(raise_exception=True)
        task = queue.task_cancel(task_id=task_id, actor=request_actor(request))
        return Response(TaskSerializer(task).data)


def _pool_query(request) -> str | None:
    query = PoolQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    pool = query.validated_data.get("pool")
    if pool is not None and not AgentPool.objects.filter(name=pool).exists():
        raise NotFound(f"pool {pool!r} does not exist", details={"pool": pool})
    return pool


class TaskStatusView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[PoolQuerySerializer], responses={200: TaskStatusSerializer})
    def get(self, request):
        return Response(selectors.task_status(pool=_pool_query(request)))


class QueuesView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[PoolQuerySerializer], responses={200: QueuesSerializer})
    def get(self, request):
        return Response(selectors.queue_sizes(pool=_pool_query(request)))


class QueueStatsView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[PoolQuerySerializer], responses={200: QueueStatsSerializer})
    def get(self, request):
        return Response(selectors.queue_stats(pool=_pool_query(request)))


class QueueClearView(APIView):
    """Operators: cancel one priority's queued tasks (`?pool=` narrows)."""

    permission_classes = [IsOperator]

    @extend_schema(request=None, parameters=[PoolQuerySerializer], responses={200: ClearedSerializer})
    def post(self, request, priority):
        pool = _pool_query(request)
        cleared = queue.queue_clear(priority=priority, pool=pool, actor=request_actor(request))
        return Response({"cleared": cleared})


class TaskClaimView(APIView):
    """`POST /api/agents/{agent_id}/tasks/claim` `{"max", "wait_seconds"}`: the agent's assigned
    tasks, highest priority first, after placing queued ones on it if it has room. With
    `wait_seconds` (at most 30) it long-polls: it looks again every TETHER_TASK_CLAIM_POLL_SECONDS
    until it has something or the wait ends — holding no database connection while it sleeps, and
    on a thread of the server's long-poll pool (`long_poll`, config/wsgi_threads.py), not one that
    other requests wait for."""

    long_poll = True
    permission_classes = [IsAuthenticated]
    error_codes = {"post": [409]}

    @extend_schema(request=ClaimSerializer, responses={200: TaskListSerializer})
    def post(self, request, agent_id):
        data = ClaimSerializer(data=request.data if request.data else {})
        data.is_valid(raise_exception=True)
        max_tasks = data.validated_data["max"]
        wait = min(data.validated_data["wait_seconds"], settings.TETHER_TASK_CLAIM_MAX_WAIT_SECONDS)
        actor = request_actor(request)
        # Counted from the request's arrival (config/wsgi_threads.py), not from when a thread took it.
        deadline = request_received(request) + wait
        while True:
            tasks = dispatch.task_claim(agent_id=agent_id, actor=actor, max_tasks=max_tasks)
            left = deadline - time.monotonic()
            if tasks or left <= 0:
                break
            if not connection.in_atomic_block:
                # Give the connection back (to the pool, or closed) while this request sleeps.
                connection.close()
            time.sleep(min(settings.TETHER_TASK_CLAIM_POLL_SECONDS, left))
        return Response({"tasks": TaskSerializer(tasks, many=True).data})
