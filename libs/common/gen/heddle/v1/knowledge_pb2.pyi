from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KnowledgeEvent(_message.Message):
    __slots__ = ("type", "event_json")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_JSON_FIELD_NUMBER: _ClassVar[int]
    type: str
    event_json: bytes
    def __init__(self, type: _Optional[str] = ..., event_json: _Optional[bytes] = ...) -> None: ...

class KnowledgeBase(_message.Message):
    __slots__ = ("id", "tenant_id", "name", "description", "embedding_model", "chunk_size", "chunk_overlap", "documents", "documents_ingested", "documents_failed", "chunks", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_INGESTED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    name: str
    description: str
    embedding_model: str
    chunk_size: int
    chunk_overlap: int
    documents: int
    documents_ingested: int
    documents_failed: int
    chunks: int
    created_at: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., embedding_model: _Optional[str] = ..., chunk_size: _Optional[int] = ..., chunk_overlap: _Optional[int] = ..., documents: _Optional[int] = ..., documents_ingested: _Optional[int] = ..., documents_failed: _Optional[int] = ..., chunks: _Optional[int] = ..., created_at: _Optional[str] = ...) -> None: ...

class CreateKnowledgeBaseRequest(_message.Message):
    __slots__ = ("tenant_id", "name", "description", "embedding_model", "chunk_size", "chunk_overlap")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    description: str
    embedding_model: str
    chunk_size: int
    chunk_overlap: int
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., embedding_model: _Optional[str] = ..., chunk_size: _Optional[int] = ..., chunk_overlap: _Optional[int] = ...) -> None: ...

class ListKnowledgeBasesRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListKnowledgeBasesResponse(_message.Message):
    __slots__ = ("knowledge_bases",)
    KNOWLEDGE_BASES_FIELD_NUMBER: _ClassVar[int]
    knowledge_bases: _containers.RepeatedCompositeFieldContainer[KnowledgeBase]
    def __init__(self, knowledge_bases: _Optional[_Iterable[_Union[KnowledgeBase, _Mapping]]] = ...) -> None: ...

class KnowledgeBaseRef(_message.Message):
    __slots__ = ("tenant_id", "knowledge_base_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_BASE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    knowledge_base_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., knowledge_base_id: _Optional[str] = ...) -> None: ...

class DocumentRef(_message.Message):
    __slots__ = ("tenant_id", "knowledge_base_id", "document_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_BASE_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    knowledge_base_id: str
    document_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., knowledge_base_id: _Optional[str] = ..., document_id: _Optional[str] = ...) -> None: ...

class DeleteKnowledgeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NewDocument(_message.Message):
    __slots__ = ("filename", "content_type", "text", "artifact_json", "file_id", "metadata_json")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_JSON_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    filename: str
    content_type: str
    text: str
    artifact_json: bytes
    file_id: str
    metadata_json: bytes
    def __init__(self, filename: _Optional[str] = ..., content_type: _Optional[str] = ..., text: _Optional[str] = ..., artifact_json: _Optional[bytes] = ..., file_id: _Optional[str] = ..., metadata_json: _Optional[bytes] = ...) -> None: ...

class AddDocumentsRequest(_message.Message):
    __slots__ = ("tenant_id", "knowledge_base_id", "documents")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_BASE_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    knowledge_base_id: str
    documents: _containers.RepeatedCompositeFieldContainer[NewDocument]
    def __init__(self, tenant_id: _Optional[str] = ..., knowledge_base_id: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[NewDocument, _Mapping]]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "knowledge_base_id", "filename", "content_type", "file_id", "status", "chunks", "error", "metadata_json", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_BASE_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    knowledge_base_id: str
    filename: str
    content_type: str
    file_id: str
    status: str
    chunks: int
    error: str
    metadata_json: bytes
    created_at: str
    updated_at: str
    def __init__(self, id: _Optional[str] = ..., knowledge_base_id: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ..., file_id: _Optional[str] = ..., status: _Optional[str] = ..., chunks: _Optional[int] = ..., error: _Optional[str] = ..., metadata_json: _Optional[bytes] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ...) -> None: ...

class AddDocumentsResponse(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class ListDocumentsResponse(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("tenant_id", "knowledge_base_id", "query", "top_k", "score_threshold", "filters_json")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_BASE_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FILTERS_JSON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    knowledge_base_id: str
    query: str
    top_k: int
    score_threshold: float
    filters_json: bytes
    def __init__(self, tenant_id: _Optional[str] = ..., knowledge_base_id: _Optional[str] = ..., query: _Optional[str] = ..., top_k: _Optional[int] = ..., score_threshold: _Optional[float] = ..., filters_json: _Optional[bytes] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("chunks_json",)
    CHUNKS_JSON_FIELD_NUMBER: _ClassVar[int]
    chunks_json: bytes
    def __init__(self, chunks_json: _Optional[bytes] = ...) -> None: ...
