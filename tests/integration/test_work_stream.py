"""The dispatcher's long-lived Work streams to node replicas: outcomes come back per attempt,
cancellation and the default deadline travel as messages, and a broken stream hands its
attempts back for a retry elsewhere."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from heddle.v1 import node_pb2, node_pb2_grpc

from libs.common import jsonutil
from libs.common.grpcutil import AUTH_METADATA_KEY, create_channel
from services.node.server import NodeService, serve
from services.node.settings import NodeServiceSettings
from services.workflow.dispatcher import NodeDispatcher
from tests.helpers import assert_eventually

TOKEN = "work-stream-token"


@pytest.fixture
async def replicas() -> AsyncIterator[list[NodeService]]:
    started = [await serve(NodeServiceSettings(grpc_port=0, service_token=TOKEN)) for _ in range(2)]
    try:
        yield started
    finally:
        for replica in started:
            await replica.stop(grace=0)


def _task(node_id: str, node_type: str = "noop", **params: object) -> node_pb2.NodeTask:
    return node_pb2.NodeTask(
        execution_id="e1",
        workflow_id="w1",
        node_id=node_id,
        node_type=node_type,
        attempt=1,
        idempotency_key=f"e1/{node_id}/1",
        params_json=jsonutil.dumps(params),
        context_json=jsonutil.dumps({"inputs": {"x": node_id}}),
        tenant_id="t1",
    )


@dataclass
class Recorder:
    outcomes: list[node_pb2.NodeOutcome] = field(default_factory=list)
    failures: list[tuple[list[str], str]] = field(default_factory=list)

    def on_outcomes(self, outcomes: Sequence[node_pb2.NodeOutcome]) -> None:
        self.outcomes.extend(outcomes)

    def on_failure(self, tasks: Sequence[node_pb2.NodeTask], reason: str) -> None:
        self.failures.append(([task.node_id for task in tasks], reason))


def _addresses(replicas: list[NodeService]) -> list[str]:
    return [f"127.0.0.1:{replica.port}" for replica in replicas]


async def test_a_wave_travels_on_both_streams_and_every_attempt_gets_its_outcome(
    replicas: list[NodeService],
) -> None:
    dispatcher = NodeDispatcher(_addresses(replicas), service_token=TOKEN)
    seen = Recorder()
    try:
        dispatcher.dispatch([_task(f"n{i}") for i in range(40)], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: len(seen.outcomes) == 40)
        assert sorted(o.node_id for o in seen.outcomes) == sorted(f"n{i}" for i in range(40))
        assert all(o.kind == node_pb2.NodeOutcome.SUCCEEDED for o in seen.outcomes)
        assert all(count > 0 for count in dispatcher.stats().values()), dispatcher.stats()
        # A chain's steps reuse the open streams: no new call per attempt.
        for step in range(5):
            dispatcher.dispatch([_task(f"c{step}")], seen.on_outcomes, seen.on_failure)
            await assert_eventually(functools.partial(last_outcome_is, seen, f"c{step}"))
        assert not seen.failures
    finally:
        await dispatcher.close()


async def test_steps_of_one_loop_turn_share_one_message_and_later_ones_take_turns(
    replicas: list[NodeService],
) -> None:
    """Many executions each sending a step in the same loop turn: one write, to one replica
    (not a message each, spread); steps of later turns still go round the replicas."""
    dispatcher = NodeDispatcher(_addresses(replicas), service_token=TOKEN)
    seen = Recorder()
    try:
        dispatcher.dispatch([_task("warm")], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: len(seen.outcomes) == 1)
        writes = {r.address: r.writes for r in dispatcher._replicas}
        for i in range(6):
            dispatcher.dispatch([_task(f"s{i}")], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: len(seen.outcomes) == 7)
        grown = {r.address: r.writes - writes[r.address] for r in dispatcher._replicas}
        assert sorted(grown.values()) == [0, 1], grown
        assert {o.node_id for o in seen.outcomes} == {"warm", *(f"s{i}" for i in range(6))}
        for step in range(4):
            dispatcher.dispatch([_task(f"c{step}")], seen.on_outcomes, seen.on_failure)
            await assert_eventually(functools.partial(last_outcome_is, seen, f"c{step}"))
        assert all(r.writes > writes[r.address] + 1 for r in dispatcher._replicas), [
            (r.address, r.writes) for r in dispatcher._replicas
        ]
        assert not seen.failures
    finally:
        await dispatcher.close()


async def test_with_attempts_out_steps_of_two_loop_turns_share_one_message(
    replicas: list[NodeService],
) -> None:
    """While the stream has other attempts out (many executions running), the writer waits
    one more loop turn: a step sent in the next turn joins the message; one stream alone
    (a chain, nothing else out) writes at once (the test above)."""
    dispatcher = NodeDispatcher(_addresses(replicas[:1]), service_token=TOKEN)
    [replica] = dispatcher._replicas
    seen = Recorder()
    try:
        held = dispatcher.dispatch(
            [_task("held", "delay", seconds=30)], seen.on_outcomes, seen.on_failure
        )
        await assert_eventually(lambda: replica.writes == 1)
        dispatcher.dispatch([_task("a")], seen.on_outcomes, seen.on_failure)
        await asyncio.sleep(0)  # the next loop turn
        dispatcher.dispatch([_task("b")], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: len(seen.outcomes) == 2)
        assert {o.node_id for o in seen.outcomes} == {"a", "b"}
        assert replica.writes == 2  # "a" and "b" in one message
        held.cancel()
        assert not seen.failures
    finally:
        await dispatcher.close()


async def test_cancelling_a_dispatch_stops_the_attempt_on_the_replica(
    replicas: list[NodeService],
) -> None:
    dispatcher = NodeDispatcher(_addresses(replicas)[:1], service_token=TOKEN)
    seen = Recorder()
    servicer = replicas[0].servicer
    try:
        handle = dispatcher.dispatch(
            [_task("slow", "delay", seconds=30)], seen.on_outcomes, seen.on_failure
        )
        await assert_eventually(lambda: servicer.in_flight == 1)
        assert handle.active()
        handle.cancel()
        assert not handle.active()
        await assert_eventually(lambda: servicer.in_flight == 0)
        # The stream lives on for the next attempt.
        dispatcher.dispatch([_task("next")], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: [o.node_id for o in seen.outcomes] == ["next"])
        assert not seen.failures
    finally:
        await dispatcher.close()


async def test_an_attempt_without_outcome_expires_at_the_default_deadline(
    replicas: list[NodeService],
) -> None:
    dispatcher = NodeDispatcher(
        _addresses(replicas)[:1], service_token=TOKEN, default_timeout_s=0.3
    )
    seen = Recorder()
    try:
        dispatcher.dispatch([_task("slow", "delay", seconds=30)], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: len(seen.failures) == 1)
        [(node_ids, reason)] = seen.failures
        assert node_ids == ["slow"] and reason.startswith("DeadlineExceeded")
        # ...and the replica was told to stop it.
        await assert_eventually(lambda: replicas[0].servicer.in_flight == 0)
        assert not seen.outcomes
    finally:
        await dispatcher.close()


async def test_a_replica_dying_hands_its_attempts_back_and_benches_it(
    replicas: list[NodeService],
) -> None:
    doomed, survivor = replicas
    dispatcher = NodeDispatcher(_addresses(replicas), service_token=TOKEN)
    seen = Recorder()
    try:
        # One attempt per replica (round-robin: each sent once the one before went out, as
        # steps of one turn share a message), both still running when one replica dies.
        for count, name in enumerate(("a", "b"), 1):
            dispatcher.dispatch(
                [_task(name, "delay", seconds=30)], seen.on_outcomes, seen.on_failure
            )
            await assert_eventually(
                lambda: doomed.servicer.in_flight + survivor.servicer.in_flight == count  # noqa: B023 - awaited here
            )
        await assert_eventually(
            lambda: doomed.servicer.in_flight == 1 and survivor.servicer.in_flight == 1
        )
        await doomed.stop(grace=0)
        await assert_eventually(lambda: len(seen.failures) == 1)
        [(node_ids, reason)] = seen.failures
        assert len(node_ids) == 1 and reason.startswith("NodeUnavailable")
        # The benched replica is skipped: the next attempts all go to the survivor.
        for step in range(4):
            dispatcher.dispatch([_task(f"r{step}")], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: len(seen.outcomes) == 4)
        assert survivor.servicer.in_flight == 1  # the other long attempt, untouched
    finally:
        await dispatcher.close()


async def test_the_work_stream_needs_the_service_token(replicas: list[NodeService]) -> None:
    address = _addresses(replicas)[0]
    async with create_channel(address) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        refused = stub.Work()
        # The server may end the stream before the first write is through: the refusal
        # surfaces at the write or at the read, whichever comes first.
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await refused.write(node_pb2.WorkRequest(tasks=[_task("x")]))
            await refused.read()
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED

        served = stub.Work(metadata=((AUTH_METADATA_KEY, TOKEN),))
        await served.write(node_pb2.WorkRequest(tasks=[_task("x")]))
        response = await asyncio.wait_for(served.read(), 10)
        assert [o.node_id for o in response.outcomes] == ["x"]
        await served.done_writing()
        # The dispatcher closing its side ends the stream once nothing runs.
        assert await asyncio.wait_for(served.read(), 10) is grpc.aio.EOF


async def test_a_dns_name_stands_for_every_replica_it_resolves_to(
    replicas: list[NodeService],
) -> None:
    # "localhost" resolves to 127.0.0.1 here; a replica per resolved address gets a stream.
    port = replicas[0].port
    dispatcher = NodeDispatcher([f"dns:///localhost:{port}"], service_token=TOKEN)
    seen = Recorder()
    try:
        assert f"ipv4:127.0.0.1:{port}" in dispatcher.stats()
        dispatcher.dispatch([_task(f"n{i}") for i in range(10)], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: len(seen.outcomes) == 10)
        # Scaling: the name now (say) resolves to two replicas, later to the second only.
        other = f"ipv4:127.0.0.1:{replicas[1].port}"
        dispatcher._follow(
            f"dns:///localhost:{port}", "localhost", [f"ipv4:127.0.0.1:{port}", other]
        )
        dispatcher.dispatch([_task(f"m{i}") for i in range(16)], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: len(seen.outcomes) == 26)
        assert dispatcher.stats()[other] > 0
        dispatcher._follow(f"dns:///localhost:{port}", "localhost", [other])
        await dispatcher._drop_retired()
        assert list(dispatcher.stats()) == [other]
        dispatcher.dispatch([_task("last")], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: seen.outcomes[-1].node_id == "last")
        assert not seen.failures
    finally:
        await dispatcher.close()


def last_outcome_is(seen: Any, node_id: str) -> bool:
    return bool(seen.outcomes) and seen.outcomes[-1].node_id == node_id


async def test_a_replica_whose_channel_cannot_connect_gets_no_work_until_it_can(
    replicas: list[NodeService],
) -> None:
    """A node replica that was down: its channel fails calls at once until gRPC dials it
    again, also for a while after it is back. The dispatcher sends nothing there meanwhile
    (an attempt sent there came back NodeUnavailable and ran again elsewhere: a second
    attempt of a node whose owner and replicas were alive), and uses it again once it can."""
    doomed = replicas[0]
    port = doomed.port
    dispatcher = NodeDispatcher(_addresses(replicas), service_token=TOKEN)
    [doomed_replica] = [r for r in dispatcher._replicas if r.address.endswith(f":{port}")]
    seen = Recorder()
    revived: NodeService | None = None
    try:
        dispatcher.dispatch([_task(f"w{i}") for i in range(16)], seen.on_outcomes, seen.on_failure)
        await assert_eventually(lambda: len(seen.outcomes) == 16)
        await doomed.stop(grace=0)
        # Its open stream breaks; dispatches go on (the next to it, if any, fails too), one
        # at a time (the steps of one turn would share one replica's message).
        for step in range(4):
            dispatcher.dispatch([_task(f"d{step}")], seen.on_outcomes, seen.on_failure)
            await assert_eventually(
                lambda: len(seen.outcomes) + len(seen.failures) >= 17 + step  # noqa: B023 - awaited here
            )
        failed_while_down = len(seen.failures)
        assert failed_while_down >= 1, "nothing was on the stopped replica's stream?"
        await assert_eventually(
            lambda: not _connectable_now(doomed_replica.channel), message="channel still up"
        )
        doomed_replica.benched_until = 0.0  # the bench is over; the channel still fails
        for step in range(6):
            dispatcher.dispatch([_task(f"s{step}")], seen.on_outcomes, seen.on_failure)
            await assert_eventually(
                lambda: (
                    last_outcome_is(seen, f"s{step}")  # noqa: B023 - awaited here
                    or len(seen.failures) > failed_while_down
                )
            )
            assert len(seen.failures) == failed_while_down, seen.failures[failed_while_down:]

        revived = await serve(NodeServiceSettings(grpc_port=port, service_token=TOKEN))
        sent_before = dispatcher.stats()[doomed_replica.address]
        step = 0

        async def used_again() -> bool:
            nonlocal step
            step += 1
            dispatcher.dispatch([_task(f"b{step}")], seen.on_outcomes, seen.on_failure)
            await assert_eventually(functools.partial(last_outcome_is, seen, f"b{step}"))
            return dispatcher.stats()[doomed_replica.address] > sent_before

        # Within the capped reconnect backoff (5 s) of its return.
        await assert_eventually(used_again, timeout=20, interval=0.2, message="never used")
        assert len(seen.failures) == failed_while_down, seen.failures[failed_while_down:]
    finally:
        await dispatcher.close()
        if revived is not None:
            await revived.stop(grace=0)


def _connectable_now(channel: grpc.aio.Channel) -> bool:
    state = channel.get_state(try_to_connect=True)
    return state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE
