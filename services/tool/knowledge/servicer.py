"""KnowledgeService over gRPC: protobuf <-> the KnowledgeManager, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from heddle.v1 import knowledge_pb2, knowledge_pb2_grpc

from libs.common import jsonutil
from libs.common.errors import InvalidArgument
from services.tool.knowledge.service import KnowledgeManager, NewDocument

DEFAULT_TENANT = "default"


def _json(data: bytes, path: str) -> Any:
    if not data:
        return None
    try:
        return jsonutil.loads(data)
    except ValueError as error:
        raise InvalidArgument(
            f"{path}: not valid JSON", [{"path": path, "message": str(error)}]
        ) from error


def _base(view: dict[str, Any]) -> knowledge_pb2.KnowledgeBase:
    return knowledge_pb2.KnowledgeBase(**view)


def _document(view: dict[str, Any]) -> knowledge_pb2.Document:
    fields = {k: v for k, v in view.items() if k != "metadata"}
    return knowledge_pb2.Document(**fields, metadata_json=jsonutil.dumps(view["metadata"]))


class KnowledgeServicer(knowledge_pb2_grpc.KnowledgeServiceServicer):
    def __init__(self, manager: KnowledgeManager) -> None:
        self.manager = manager

    async def CreateKnowledgeBase(
        self, request: knowledge_pb2.CreateKnowledgeBaseRequest, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.KnowledgeBase:
        return _base(
            await self.manager.create_base(
                request.tenant_id or DEFAULT_TENANT,
                request.name,
                description=request.description,
                embedding_model=request.embedding_model,
                chunk_size=request.chunk_size,
                chunk_overlap=request.chunk_overlap,
            )
        )

    async def ListKnowledgeBases(
        self, request: knowledge_pb2.ListKnowledgeBasesRequest, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.ListKnowledgeBasesResponse:
        bases = await self.manager.list_bases(request.tenant_id or DEFAULT_TENANT)
        return knowledge_pb2.ListKnowledgeBasesResponse(knowledge_bases=[_base(b) for b in bases])

    async def GetKnowledgeBase(
        self, request: knowledge_pb2.KnowledgeBaseRef, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.KnowledgeBase:
        tenant = request.tenant_id or DEFAULT_TENANT
        return _base(await self.manager.get_base(tenant, request.knowledge_base_id))

    async def DeleteKnowledgeBase(
        self, request: knowledge_pb2.KnowledgeBaseRef, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.DeleteKnowledgeResponse:
        tenant = request.tenant_id or DEFAULT_TENANT
        await self.manager.delete_base(tenant, request.knowledge_base_id)
        return knowledge_pb2.DeleteKnowledgeResponse()

    async def AddDocuments(
        self, request: knowledge_pb2.AddDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.AddDocumentsResponse:
        documents = [
            NewDocument(
                filename=d.filename,
                content_type=d.content_type,
                text=None if d.artifact_json else d.text,
                artifact=_json(d.artifact_json, f"documents[{i}].artifact"),
                file_id=d.file_id,
                metadata=_json(d.metadata_json, f"documents[{i}].metadata"),
            )
            for i, d in enumerate(request.documents)
        ]
        added = await self.manager.add_documents(
            request.tenant_id or DEFAULT_TENANT, request.knowledge_base_id, documents
        )
        return knowledge_pb2.AddDocumentsResponse(documents=[_document(d) for d in added])

    async def ListDocuments(
        self, request: knowledge_pb2.KnowledgeBaseRef, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.ListDocumentsResponse:
        tenant = request.tenant_id or DEFAULT_TENANT
        documents = await self.manager.list_documents(tenant, request.knowledge_base_id)
        return knowledge_pb2.ListDocumentsResponse(documents=[_document(d) for d in documents])

    async def DeleteDocument(
        self, request: knowledge_pb2.DocumentRef, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.DeleteKnowledgeResponse:
        await self.manager.delete_document(
            request.tenant_id or DEFAULT_TENANT, request.knowledge_base_id, request.document_id
        )
        return knowledge_pb2.DeleteKnowledgeResponse()

    async def Retrieve(
        self, request: knowledge_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.RetrieveResponse:
        chunks = await self.manager.retrieve(
            request.tenant_id or DEFAULT_TENANT,
            request.knowledge_base_id,
            request.query,
            top_k=request.top_k or 5,
            score_threshold=(
                request.score_threshold if request.HasField("score_threshold") else None
            ),
            filters=_json(request.filters_json, "filters"),
        )
        return knowledge_pb2.RetrieveResponse(chunks_json=jsonutil.dumps(chunks))

    async def StreamEvents(
        self, request: knowledge_pb2.KnowledgeBaseRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[knowledge_pb2.KnowledgeEvent]:
        tenant = request.tenant_id or DEFAULT_TENANT
        async for event in self.manager.events(tenant, request.knowledge_base_id):
            yield knowledge_pb2.KnowledgeEvent(type=event["type"], event_json=jsonutil.dumps(event))
