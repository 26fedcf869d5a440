from __future__ import annotations

import time

import pytest

from services.node.executors.base import NodeError, NodeSettings, Services
from tests.node.conftest import RunNode


async def code_error(run_node: RunNode, source: str, **kwargs: object) -> NodeError:
    with pytest.raises(NodeError) as caught:
        await run_node("code", {"source": source}, **kwargs)
    assert not caught.value.retryable
    return caught.value


async def test_result_variable_and_stdout_logs(run_node: RunNode) -> None:
    source = (
        "import math, json\n"
        "from collections import Counter\n"
        "print('hello', inputs['inputs']['n'])\n"
        "result = {'root': math.sqrt(inputs['inputs']['n']),\n"
        "          'top': Counter(inputs['fetch']['words']).most_common(1)[0][0]}\n"
    )
    result = await run_node(
        "code",
        {"source": source},
        context={"inputs": {"n": 16}, "fetch": {"words": ["a", "b", "a"]}},
    )
    assert result.output == {"result": {"root": 4.0, "top": "a"}}
    assert result.logs == [{"level": "info", "message": "hello 16", "stream": "stdout"}]


async def test_main_function_and_explicit_inputs(run_node: RunNode) -> None:
    source = "def main(inputs):\n    return sorted(inputs['xs'], reverse=True)\n"
    result = await run_node(
        "code",
        {"source": source, "inputs": {"xs": "{{ a.values }}"}},
        context={"a": {"values": [1, 3, 2]}},
    )
    assert result.output == {"result": [3, 2, 1]}


async def test_exception_names_the_line(run_node: RunNode) -> None:
    error = await code_error(run_node, "x = 1\ny = x / 0\nresult = y\n")
    assert error.type == "CodeError"
    assert error.message == "ZeroDivisionError: division by zero (line 2)"


async def test_syntax_error(run_node: RunNode) -> None:
    error = await code_error(run_node, "result = (1,\n")
    assert error.type == "CodeError"
    assert "SyntaxError" in error.message


async def test_wall_clock_timeout_kills_the_code(run_node: RunNode, services: Services) -> None:
    services.settings = NodeSettings(code_timeout_s=0.5)
    started = time.monotonic()
    error = await code_error(run_node, "while True:\n    pass\n")
    assert error.type == "Timeout"
    assert time.monotonic() - started < 3


async def test_memory_bomb_hits_the_memory_limit(run_node: RunNode, services: Services) -> None:
    services.settings = NodeSettings(code_memory_mb=128)
    error = await code_error(run_node, "blocks = [bytearray(50 * 2**20) for _ in range(10)]\n")
    assert error.type == "CodeError"
    assert "memory limit" in error.message


@pytest.mark.parametrize(
    "source",
    [
        "import os\nresult = os.getcwd()",
        "import subprocess",
        "from importlib import import_module",
        "import uuid\nresult = uuid.os.getcwd()",
        "import random\nresult = random._os.getcwd()",
        "result = ().__class__.__base__.__subclasses__()",
        "result = getattr((), '__class__')",
        "from operator import attrgetter",
    ],
)
async def test_forbidden_imports_and_escapes(run_node: RunNode, source: str) -> None:
    error = await code_error(run_node, source)
    assert error.type == "CodeError"


@pytest.mark.parametrize(
    "source",
    ["open('/etc/passwd')", "eval('1')", "exec('x=1')", "compile('1', 'f', 'eval')", "input()"],
)
async def test_dangerous_builtins_are_absent(run_node: RunNode, source: str) -> None:
    error = await code_error(run_node, f"result = {source}")
    assert error.message.startswith("NameError")


async def test_result_must_be_json(run_node: RunNode) -> None:
    error = await code_error(run_node, "result = {1, 2}")
    assert "JSON-serializable" in error.message
    error = await code_error(run_node, "reslt = 1")
    assert "result" in error.message


async def test_source_is_not_templated(run_node: RunNode) -> None:
    # A template in the source stays text: upstream data must not become code.
    result = await run_node(
        "code", {"source": "result = '{{ inputs.x }}'"}, context={"inputs": {"x": "1"}}
    )
    assert result.output == {"result": "{{ inputs.x }}"}
