"""What other nodes ask of this one over RPC; hakitd serves these.

  cli            {argv}                        run `hakit ARGV...` here -> {code, stdout, stderr}
  apply_cluster  {files}                       install a shipped cluster.xml (and renewed credentials)
  apply_module   {module, archive, nodes, id}  install or replace a module's configuration
  module_state   {module}                      -> {state, status}, from the module's store
  web_read       {what, ...}                   what the web service shows of this node (node/web/reads.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from hakit import ipc
from hakit.child import python_argv
from hakit.config.cluster_model import Cluster
from hakit.config.loader import ConfigInvalid, load_cluster, load_module
from hakit.config.safe_archive import pack, unpack
from hakit.errors import HakitError
from hakit.files import private_dir
from hakit.module.catalog import MAX_ID, Catalog, check_name
from hakit.node import pki, trust
from hakit.node.cluster_conf import ClusterConfigError, install_cluster_xml, modules_against
from hakit.paths import Paths
from hakit.runtime import credentials
from hakit.runtime.identity import local_node
from hakit.store.module_store import ModuleStore

CLI_TIMEOUT = 900.0  # a remote `start` may wait for its module's start scripts (up to 600 s)
CLUSTER_FILE = "cluster.xml"


class ApplyError(HakitError):
    pass


def apply_cluster(p: Paths, args: dict[str, Any], user: str) -> dict[str, Any]:
    files = args.get("files")
    if not isinstance(files, dict) or not isinstance(files.get(CLUSTER_FILE), bytes):
        raise ApplyError(f"apply_cluster needs the bytes of {CLUSTER_FILE}")
    extra = set(files) - {CLUSTER_FILE, credentials.NODE_CERT, credentials.NODE_KEY, credentials.CA_CERT,
                          credentials.RETIRED}
    if extra:
        raise ApplyError(f"apply_cluster: unexpected files {', '.join(sorted(map(str, extra)))}")
    creds = None
    if credentials.NODE_CERT in files or credentials.NODE_KEY in files:
        creds = pki.NodeCredentials(bytes(files.get(credentials.NODE_KEY, b"")),
                                    bytes(files.get(credentials.NODE_CERT, b"")))
    ship = None
    if credentials.CA_CERT in files:
        ship = trust.Shipped(bytes(files[credentials.CA_CERT]), bytes(files.get(credentials.RETIRED, b"")))

    def for_this_node(cluster: Cluster) -> None:
        # Checked before anything is replaced: a bad certificate or trust would cut this
        # node off, another node's certificate would let it pose as that node.
        cas = None
        if ship is not None:
            mine = creds.cert_pem if creds else credentials.node_cert_path(p).read_bytes()
            cas = trust.check_shipped(ship, mine)
        if creds is not None:
            pki.check_credentials(creds, local_node(cluster), cas if cas is not None else pki.read_cas(p))

    try:
        done = install_cluster_xml(p, files[CLUSTER_FILE], f"cluster.xml from {user}", accept=for_this_node)
    except ClusterConfigError as exc:
        raise ApplyError(exc.full()) from None
    if ship is not None:
        trust.install_shipped(p, ship)  # before the credentials: they may be of a new CA
    if creds:
        pki.write_node_credentials(p, creds)
    notes = [str(problem) for problem in modules_against(p, done.cluster)]
    try:
        notes += pki.setup_local(p, done.cluster)
    except HakitError as exc:
        notes.append(str(exc))
    return {"signature": done.signature, "previous": done.previous, "renewed": creds is not None,
            "notes": notes}


# ---------------------------------------------------------------- modules


def apply_module(p: Paths, args: dict[str, Any], running: bool) -> dict[str, Any]:
    """Install or replace a module's configuration, shipped as a .safe archive.  A module
    that exists keeps its id (its ports derive from it), a new one takes the sender's."""
    name = str(args.get("module", ""))
    archive, nodes, sender_id = args.get("archive"), args.get("nodes"), args.get("id")
    check_name(name)
    if not isinstance(archive, bytes) or not isinstance(nodes, list) or not isinstance(sender_id, int):
        raise ApplyError("apply_module needs the module's archive (bytes), nodes (list) and id (int)")
    cluster = load_cluster(p.cluster_xml)
    unknown = [str(n) for n in nodes if n not in cluster.node_names]
    if unknown:
        raise ApplyError(f"{', '.join(unknown)}: not in this node's cluster.xml; "
                         "apply the cluster configuration first (hakit -H \"*\" -G)")
    catalog = Catalog(p)
    exists = catalog.exists(name)
    if exists and (running or ipc.answering(p.module_socket(name))):
        raise ApplyError(f"module {name} is running on {local_node(cluster)}; stop it there first")
    if exists:
        module_id = catalog.module_id(name)
    else:
        module_id = sender_id
        if not 1 <= module_id <= MAX_ID:
            raise ApplyError(f"module id {module_id} is out of range 1..{MAX_ID}")
        owner = next((other for other in catalog.names() if catalog.module_id(other) == module_id), None)
        if owner is not None:
            raise ApplyError(f"module id {module_id} is already used here by module {owner}; "
                             "give one of them another id (hakit module install -M ID)")
    p.modules.mkdir(parents=True, exist_ok=True)
    backup = None
    # Unpack and validate beside the final place, then rename: a bad archive changes nothing.
    with tempfile.TemporaryDirectory(dir=p.modules, prefix=".apply-") as tmp:
        shipped = Path(tmp) / f"{name}.safe"
        shipped.write_bytes(archive)
        staged = Path(tmp) / name
        unpack(shipped, staged)
        try:
            load_module(staged / "conf" / "userconfig.xml", cluster)
        except ConfigInvalid as exc:
            raise ApplyError(f"module {name} is not installable here:\n{exc}") from None
        (staged / "id").write_text(f"{module_id}\n")  # (the key came out 0600: unpack)
        if exists:
            backup = private_dir(p.backup) / f"{name}_{time.strftime('%Y%m%dT%H%M%S')}.safe"
            pack(p.module_dir(name), backup)
            p.module_dir(name).rename(Path(tmp) / "replaced")
        staged.rename(p.module_dir(name))
    for d in (p.module_var(name), p.module_log(name)):
        d.mkdir(parents=True, exist_ok=True)
    catalog.set_nodes(name, [str(n) for n in nodes])
    return {"id": module_id, "replaced": exists, "backup": str(backup) if backup else None}


def module_state(p: Paths, args: dict[str, Any]) -> dict[str, str]:
    name = str(args.get("module", ""))
    Catalog(p).require(name)
    db = p.module_db(name)
    if not db.exists():
        return {"state": "STOP", "status": "NotReady"}
    with ModuleStore(db) as store:
        state, status = store.state() or ("STOP", "NotReady")
    return {"state": state, "status": status}


# ---------------------------------------------------------------- commands


async def run_cli(args: dict[str, Any], user: str, fan_out: bool = False) -> dict[str, Any]:
    """`hakit ARGV...` on this node, as a separate process (the CLI's own error handling,
    commands log and exit code apply), on behalf of `user` (the commands log and the module
    log name them) coming from `origin` ("api" for the web service, else the asking node).
    fan_out: ARGV may be `-H NODES ...` (this node's own web service applying a
    configuration), never when another node asks (no command bouncing between nodes)."""
    argv = args.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ApplyError("cli needs argv, a non-empty list of strings")
    if argv[0] == "-H" and not fan_out:
        raise ApplyError("a command run through -H cannot use -H itself")
    proc = await asyncio.create_subprocess_exec(
        *python_argv("hakit.cli.main", *argv),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, ipc.USER_ENV: user,
             ipc.ORIGIN_ENV: str(args.get("origin") or user.rpartition("@")[2])},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ApplyError(f"`hakit {shlex.join(argv)}` did not finish within {CLI_TIMEOUT:g} s") from None
    return {"code": proc.returncode, "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace")}
