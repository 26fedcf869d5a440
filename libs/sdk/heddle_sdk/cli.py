"""`heddle-worker` (and `heddle worker`, `python -m heddle_sdk worker`): serve the node types
of Python modules or files to a cluster.

    heddle-worker examples/worker/nodes.py --server 127.0.0.1:50151 --api-key hk_...
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import httpx

from heddle_sdk.errors import WorkerError
from heddle_sdk.nodes import collect_node_types
from heddle_sdk.worker import Worker

#: The embedded stack's worker port (the workflow service's gRPC port + 100).
DEFAULT_WORKER_SERVER = "127.0.0.1:50151"
DEFAULT_GATEWAY = "http://127.0.0.1:8080"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def development_key(server: str, gateway: str) -> str:
    """The key the embedded stack offers to loopback callers ("" when none): only asked
    for when both the worker endpoint and the gateway are on this machine."""
    host = server.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if host not in LOOPBACK or (urlsplit(gateway).hostname or "") not in LOOPBACK:
        return ""
    try:
        offered = httpx.get(f"{gateway.rstrip('/')}/console/config", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return ""
    key = offered.get("dev_api_key") if isinstance(offered, dict) else None
    return key if isinstance(key, str) else ""


def load_module(spec: str) -> ModuleType:
    """A module by dotted name ("my_package.nodes") or by path ("nodes.py"); ImportError
    when neither finds it."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ImportError(f"no such file: {spec}")
        name = f"heddle_worker_{path.stem}"
        found = importlib.util.spec_from_file_location(name, path)
        if found is None or found.loader is None:
            raise ImportError(f"cannot load {spec}")
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        # The file's own folder first, so it can import its neighbours.
        sys.path.insert(0, str(path.resolve().parent))
        found.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(spec)


def build_parser(prog: str = "heddle-worker") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve the @node_type functions of modules to a Heddle cluster."
    )
    parser.add_argument("modules", nargs="+", help="module names or .py files")
    parser.add_argument(
        "--server",
        default=os.environ.get("HEDDLE_WORKER_SERVER", DEFAULT_WORKER_SERVER),
        help="the cluster's worker endpoint, host:port or grpcs://host:port "
        f"(HEDDLE_WORKER_SERVER; default {DEFAULT_WORKER_SERVER})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("HEDDLE_API_KEY", ""),
        help="an API key of the tenant with the execute scope (HEDDLE_API_KEY)",
    )
    parser.add_argument(
        "--gateway",
        default=os.environ.get("HEDDLE_SERVER", DEFAULT_GATEWAY),
        help="without --api-key, a loopback worker asks this local gateway for the embedded "
        "stack's development key, as the CLI does (HEDDLE_SERVER)",
    )
    parser.add_argument("--max-concurrency", type=int, default=10, help="attempts at once")
    parser.add_argument("--name", default=None, help="a name for logs and the node-type list")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return parser


def run(argv: Sequence[str] | None = None, prog: str = "heddle-worker") -> int:
    """Parse argv, load the modules and serve; the process's exit code."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        modules = [load_module(spec) for spec in args.modules]
    except ImportError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    node_types = collect_node_types(modules)
    if not node_types:
        print(f"{prog}: no @node_type functions in {' '.join(args.modules)}", file=sys.stderr)
        return 2
    api_key = args.api_key or development_key(args.server, args.gateway)
    if not api_key:
        print(f"{prog}: an API key is needed: --api-key or HEDDLE_API_KEY", file=sys.stderr)
        return 2
    worker = Worker(
        args.server,
        api_key,
        node_types,
        max_concurrency=args.max_concurrency,
        name=args.name,
    )
    print(
        f"serving {', '.join(t.type for t in node_types)} to {args.server}"
        f" ({args.max_concurrency} slots); Ctrl-C or SIGTERM drains",
        file=sys.stderr,
        flush=True,
    )
    try:
        worker.run()
    except WorkerError as error:
        print(f"{prog}: the cluster refused this worker: {error}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    argv = sys.argv[1:]
    # `python -m heddle_sdk worker ...` and `heddle-worker ...` alike.
    if argv[:1] == ["worker"]:
        argv = argv[1:]
    raise SystemExit(run(argv))
