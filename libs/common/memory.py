"""Conversation memory windows: which messages of a session history a model call gets.

Shared by the workflow service (which loads a session into an ``agent``/``llm`` node's params
at dispatch) and the node executors (which may cut their own step messages the same way).
A policy is a dict: ``last_n`` (keep at most the newest N messages) and ``max_tokens`` (keep
the newest messages whose estimated tokens fit the budget); both may be given, the tighter wins.
Tokens are estimated at 4 characters each: cheap, provider-neutral, and conservative enough for
a window (a real tokenizer would tie this module to one model family).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["estimate_tokens", "window"]

#: Per-message overhead (role, separators) in the estimate, as chat formats add a few tokens.
_MESSAGE_OVERHEAD = 4


def estimate_tokens(message: dict[str, Any]) -> int:
    """A cheap token estimate of one message: len(content) / 4, plus a small overhead."""
    content = message.get("content")
    text = content if isinstance(content, str) else str(content or "")
    return (len(text) + 3) // 4 + _MESSAGE_OVERHEAD


def window(
    messages: Sequence[dict[str, Any]], policy: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped): the newest messages the policy keeps, in order, and the older rest.

    System messages at the head of the history are always kept (they carry instructions or a
    summary) and count against the token budget first.
    """
    policy = policy or {}
    items = list(messages)
    head: list[dict[str, Any]] = []
    while items and items[0].get("role") == "system":
        head.append(items.pop(0))
    last_n = policy.get("last_n")
    budget = policy.get("max_tokens")
    start = 0
    if isinstance(last_n, int) and last_n >= 0:
        start = max(0, len(items) - last_n)
    if isinstance(budget, int) and budget > 0:
        used = sum(estimate_tokens(m) for m in head)
        cut = len(items)
        while cut > start and used + estimate_tokens(items[cut - 1]) <= budget:
            used += estimate_tokens(items[cut - 1])
            cut -= 1
        start = cut
    return head + items[start:], items[:start]
