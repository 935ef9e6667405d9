from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response

from config.api.authentication import request_actor
from config.api.permissions import ReadAnyWriteOperator
from config.api.views import APIView, DecoratedListMixin, ListAPIView
from pools import selectors, services
from pools.api.serializers import PoolCreatedSerializer, PoolCreateSerializer, PoolSerializer, PoolUpdateSerializer
from pools.filters import PoolFilter


class PoolListCreateView(DecoratedListMixin, ListAPIView):
    """`GET /api/pools` (any credential), `POST /api/pools` (operators)."""

    permission_classes = [ReadAnyWriteOperator]
    serializer_class = PoolSerializer
    filterset_class = PoolFilter
    error_codes = {"post": [409]}

    def get_queryset(self):
        return selectors.pool_list()

    def decorate(self, objects):
        selectors.pools_attach_counts(objects)

    @extend_schema(request=PoolCreateSerializer, responses={201: PoolCreatedSerializer})
    def post(self, request):
        data = PoolCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pool, token = services.pool_create(actor=request_actor(request), **data.validated_data)
        selectors.pools_attach_counts([pool])
        body = PoolSerializer(pool).data | {"enrollment_token": token}
        return Response(body, status=status.HTTP_201_CREATED)


class PoolDetailView(APIView):
    permission_classes = [ReadAnyWriteOperator]

    @extend_schema(responses={200: PoolSerializer})
    def get(self, request, name):
        pool = get_object_or_404(selectors.pool_list(), name=name)
        selectors.pools_attach_counts([pool])
        return Response(PoolSerializer(pool).data)

    @extend_schema(request=PoolUpdateSerializer, responses={200: PoolSerializer})
    def patch(self, request, name):
        """Operators: change any writable field, `strategy` included."""
        data = PoolUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pool, _ = services.pool_update(name=name, actor=request_actor(request), **data.validated_data)
        selectors.pools_attach_counts([pool])
        return Response(PoolSerializer(pool).data)
