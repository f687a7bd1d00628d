"""Replication commands: rfsdiff (what a synchronisation would send now) and rfsprogress
(follow a running synchronisation until it ends)."""

from __future__ import annotations

import argparse
import sys
import time

from hakit import ipc
from hakit.errors import DaemonNotRunning, HakitError
from hakit.module.catalog import Catalog
from hakit.paths import paths
from hakit.rfs.progress import human_bytes, human_duration, sync_fraction, sync_line
from hakit.store.module_store import ModuleStore

RFSDIFF_TIMEOUT_S = 24 * 3600.0  # a comparison reads both whole trees: as long as that takes
POLL_S = 0.5
PLAIN_EVERY_S = 5.0  # without a terminal: one line this often
BAR = 20
MODE_TEXT = {"journal": "recorded while alone", "compare": "differing from the secondary"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rfsdiff",
                       help="mirror primary: what a synchronisation of the secondary would send now")
    p.add_argument("-m", dest="module", required=True, metavar="AM")
    p.set_defaults(func=_rfsdiff)

    p = sub.add_parser("rfsprogress", help="follow a mirror module's synchronisation until it ends "
                                           "(exit 0: synchronised, 1: failed or not running)")
    p.add_argument("-m", dest="module", required=True, metavar="AM")
    p.set_defaults(func=_rfsprogress)


def _rfsdiff(args: argparse.Namespace) -> int:
    p = paths()
    Catalog(p).require(args.module)
    try:
        result = ipc.call(p.module_socket(args.module), "rfsdiff", timeout=RFSDIFF_TIMEOUT_S,
                          what=f"module {args.module}")
    except DaemonNotRunning:
        raise HakitError(f"rfsdiff: module {args.module} is not started on this node") from None
    total = 0
    for d in result["dirs"]:
        size = int(d.get("bytes") or 0)
        if d.get("mode") == "none":
            print(f"{d['dir']}: no journal: the next synchronisation is a full one")
            continue
        what = MODE_TEXT.get(str(d.get("mode")), "")
        line = f"{d['dir']}: {d.get('mode')}, {d.get('paths', '?')} entries, {human_bytes(size)} {what}"
        print(line.rstrip())
        total += size
    rate = float(result.get("rate") or 0)
    if total and rate:
        print(f"estimated time: {human_duration(total / rate)} at {human_bytes(rate)}/s "
              "(the last synchronisation's rate)")
    return 0


def _rfsprogress(args: argparse.Namespace) -> int:
    p = paths()
    Catalog(p).require(args.module)
    store = ModuleStore(p.module_db(args.module))
    tty = sys.stdout.isatty()
    printed, width = 0.0, 0
    try:
        while True:
            values = {r.name: r.value for r in store.resources()}
            state, status = values.get("module.state", "STOP"), values.get("module.status", "NotReady")
            sync = values.get("rfs.sync_state")
            code, end = _outcome(args.module, values, state, status, sync)
            line = (end or sync_line(values)
                    or f"{args.module}: {state} ({status}), waiting for a synchronisation")
            if tty:
                bar = "#" * round(sync_fraction(values) * BAR) if sync == "running" else ""
                text = f"[{bar:<{BAR}}] {line}" if end is None else line
                sys.stdout.write("\r" + text.ljust(width) + ("\n" if end is not None else ""))
                sys.stdout.flush()
                width = len(text)
            elif end is not None or time.monotonic() - printed >= PLAIN_EVERY_S:
                print(line, flush=True)
                printed = time.monotonic()
            if code is not None:
                return code
            time.sleep(POLL_S)
    finally:
        store.close()


def _outcome(module: str, values: dict[str, str], state: str, status: str, sync: str | None
             ) -> tuple[int | None, str | None]:
    """(exit code, last line) once there is nothing more to follow, else (None, None)."""
    if sync == "failed":
        return 1, f"{module}: the synchronisation failed ('hakit logview -m {module}' tells why)"
    if state in ("PRIM", "SECOND") and status == "Ready" and sync != "running":
        done = ""
        if values.get("rfs.sync_bytes_sent", "unknown") != "unknown":
            done = (f": {values.get('rfs.sync_mode')}, {human_bytes(int(values['rfs.sync_bytes_sent']))} "
                    f"sent in {values.get('rfs.sync_elapsed_s')} s")
        return 0, f"{module}: {state} (Ready), synchronised{done}"
    if state == "STOP" or (state == "WAIT" and status == "NotReady"):
        return 1, f"{module}: {state} ({status}): no synchronisation runs"
    return None, None
