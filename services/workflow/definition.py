"""The workflow definition's models, as the workflow service's modules import them: they
live in libs/common/definition.py, the contract the gateway (its OpenAPI schema), the CLI and
this service share."""

from libs.common.definition import (
    BARE_EXPRESSION_PARAMS,
    LITERAL_PARAMS,
    NODE_ID_PATTERN,
    ON_FAILURE_NODE_ID,
    RESERVED_NAMES,
    CachePolicy,
    EdgeSpec,
    InputSpec,
    NodeSpec,
    OnFailureSpec,
    RetryPolicy,
    TriggerSpec,
    WorkflowDefinition,
    WorkflowSettings,
    allocation_burst,
    expression_sources,
    node_id_problem,
)

__all__ = [
    "BARE_EXPRESSION_PARAMS",
    "LITERAL_PARAMS",
    "NODE_ID_PATTERN",
    "ON_FAILURE_NODE_ID",
    "RESERVED_NAMES",
    "CachePolicy",
    "EdgeSpec",
    "InputSpec",
    "NodeSpec",
    "OnFailureSpec",
    "RetryPolicy",
    "TriggerSpec",
    "WorkflowDefinition",
    "WorkflowSettings",
    "allocation_burst",
    "expression_sources",
    "node_id_problem",
]
