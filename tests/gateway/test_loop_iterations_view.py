"""The node detail's view of a loop's iterations (no I/O): the checkpoint's records joined
with their outputs, the last ITERATIONS_SHOWN of them with the total, a large output left out."""

from __future__ import annotations

from services.gateway.convert import ITERATION_OUTPUT_SHOWN, ITERATIONS_SHOWN, _iterations


def test_the_last_iterations_are_shown_with_their_outputs_and_the_total() -> None:
    count = ITERATIONS_SHOWN + 50
    records = [
        {"index": i, "status": "succeeded", "attempt": 1, "duration_ms": 1.5} for i in range(count)
    ]
    records.append(
        {"index": count, "status": "failed", "attempt": 1, "error": {"type": "E", "message": "m"}}
    )
    outputs: list[dict[str, object]] = [{"n": i} for i in range(count)]
    outputs[-1] = {"big": "x" * (ITERATION_OUTPUT_SHOWN + 1)}
    shown, total = _iterations({"index": count, "outputs": outputs, "iterations": records})
    assert total == count + 1
    assert shown is not None and len(shown) == ITERATIONS_SHOWN
    assert [it.index for it in shown] == list(range(count + 1 - ITERATIONS_SHOWN, count + 1))
    assert shown[0].output == {"n": count + 1 - ITERATIONS_SHOWN}
    assert shown[-2].output is None and shown[-2].output_truncated
    assert shown[-1].status == "failed" and shown[-1].output is None
    assert shown[-1].error is not None and shown[-1].error.message == "m"


def test_a_node_without_iteration_records_has_none() -> None:
    assert _iterations(None) == (None, None)
    assert _iterations({"journal": []}) == (None, None)  # an agent's checkpoint
    assert _iterations({"index": 2, "outputs": [1, 2]}) == (None, None)  # before records
