"""Subcommands that run the HTTP service and talk to ComfyUI."""
from __future__ import annotations

import sys

from perflib.cli.common import SECONDS, open_store, whole
from perflib.config import safe_url


def cmd_serve(args) -> int:
    from perflib.serve import main as serve_main

    argv = []
    if args.host:
        argv += ["--host", args.host]
    if args.port:
        argv += ["--port", str(args.port)]
    if args.database_url:
        argv += ["--database-url", args.database_url]
    return serve_main(argv) or 0


def cmd_comfyui_collect(args) -> int:
    from perflib.comfyui.collect import Collector

    store = open_store(args)
    collector = Collector(args.url, store, interval=args.interval)
    if args.once:
        stored = collector.poll_once()
        for status in collector.statuses():
            print(status.summary())
        print(f"{stored} new prompts stored in {safe_url(store.url)}")
        return 0 if all(status.up for status in collector.statuses()) else 1
    print(f"collecting from {', '.join(args.url)} every {args.interval:g} s into "
          f"{safe_url(store.url)} (Ctrl-C stops)", flush=True)
    try:
        collector.run(on_change=lambda status: print(status.summary(), flush=True))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_comfyui_install(args) -> int:
    from perflib.comfyui.install import install_node

    try:
        installed = install_node(args.comfyui_dir, args.service_url, args.base_directory)
    except ValueError as exc:
        print(f"perflib comfyui install: {exc}", file=sys.stderr)
        return 2
    print(f"installed the perflib node package in {installed.path} "
          f"({len(installed.files)} files)")
    if installed.config:
        print(f"service URL written to {installed.config}")
    print("restart ComfyUI to load it")
    return 0


def comfyui_commands(commands) -> None:
    """The ``perflib comfyui`` group: collect and install."""
    comfyui = commands.add_parser("comfyui", help="ComfyUI: collect the prompts its servers "
                                  "run; install the perflib node into one")
    comfyui_commands = comfyui.add_subparsers(dest="comfyui_command", required=True)
    collect = comfyui_commands.add_parser(
        "collect", help="store every prompt ComfyUI servers run, and their queues as live jobs")
    collect.add_argument("--url", action="append", required=True,
                         help="a ComfyUI server, e.g. http://127.0.0.1:8188 (repeat for several)")
    mode = collect.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="poll each server once, print its status, exit 1 if any is down")
    mode.add_argument("--follow", action="store_true", help="keep polling (the default)")
    collect.add_argument("--interval", type=SECONDS, default=2.0,
                         help="seconds between polls (default 2; a server that is down is "
                              "retried with backoff up to a minute)")
    collect.set_defaults(handler=cmd_comfyui_collect)
    install = comfyui_commands.add_parser(
        "install", help="install the perflib custom node package (estimates in the browser, "
                        "per-node job records) into a ComfyUI checkout")
    install.add_argument("comfyui_dir", metavar="COMFYUI_DIR",
                         help="the ComfyUI checkout (the folder with main.py)")
    install.add_argument("--service-url",
                         help="the perflib service the node talks to (default: the node's "
                              "PERFLIB_SERVICE_URL, else http://127.0.0.1:8328)")
    install.add_argument("--base-directory",
                         help="ComfyUI's --base-directory, when it runs with one")
    install.set_defaults(handler=cmd_comfyui_install)


def serve_command(commands) -> None:
    """The HTTP service."""
    serve = commands.add_parser("serve", help="run the HTTP service (estimate-time, ...)")
    serve.add_argument("--host", help="default PERFLIB_HOST, else 127.0.0.1")
    serve.add_argument("--port", type=whole(1, 65_535),
                       help="default PERFLIB_PORT, else 8328")
    serve.set_defaults(handler=cmd_serve)
