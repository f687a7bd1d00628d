"""hakit demo: a simulated cluster on this machine with sample modules installed."""

from __future__ import annotations

import argparse

from hakit.testing.demo import run_demo


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="bring up a simulated cluster with sample modules (Ctrl-C stops it)")
    p.add_argument("--name", default="demo", help="harness name (default: demo)")
    p.add_argument("--detach", action="store_true", help="leave it running; 'make demo-down' removes it")
    p.set_defaults(func=lambda args: run_demo(args.name, args.detach))
