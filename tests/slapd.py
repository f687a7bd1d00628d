"""A real OpenLDAP server (Debian's slapd) for the LDAP login tests, started and stopped by them.

    with Slapd(tmp_path, DIRECTORY, certs) as ldap:    # listening on 127.0.0.1
        ldap.url("ldaps")                                # ldaps://127.0.0.1:PORT

Its configuration, database, certificates and log live under the directory given; it runs in
the foreground as this process's child and is stopped by that PID, even when the test fails.
The memberof overlay gives memberOf to the members of groupOfNames groups added while it runs
(as Active Directory would); entries loaded before the start (slapadd) get none, so a test can
have groups seen either way.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
ROOT_DN = "cn=admin,dc=example,dc=com"
ROOT_PW = "root-secret"
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Certs:
    """A CA and a server certificate it signed, as PEM files."""

    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))


def make_ca(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(name, _name(name), key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_certs(directory: Path, addrs: Sequence[str]) -> Certs:
    """A test CA and a server certificate naming the IP addresses `addrs` (and no host name)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key, ca_cert = make_ca(directory, "ldap-test-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(a)) for a in addrs]
    cert = (_builder("ldap-test-server", ca_cert.subject, key)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return Certs(ca_path, cert_path, key_path)


def free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


class Slapd:
    """slapd serving dc=example,dc=com from `directory`: ldap:// (StartTLS offered) and ldaps://
    on two free ports of `addr` (without certs: ldap:// alone, StartTLS refused); stopped, and
    everything under `directory` removed, on leaving the `with`.  `preload` is LDIF put in the
    database before the start (slapadd), `online` LDIF added once it runs (ldapadd, through the
    overlays)."""

    def __init__(self, directory: Path, certs: Certs | None, preload: str, online: str = "",
                 addr: str = "127.0.0.1") -> None:
        self.dir = directory
        self.certs = certs
        self.preload = preload
        self.online = online
        self.addr = addr
        self.port = self.tls_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, scheme: str = "ldap") -> str:
        return f"{scheme}://{self.addr}:{self.tls_port if scheme == 'ldaps' else self.port}"

    @property
    def log(self) -> str:
        try:
            return (self.dir / "slapd.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _write_config(self) -> Path:
        (self.dir / "db").mkdir(parents=True, exist_ok=True)
        conf = self.dir / "slapd.conf"
        conf.write_text("".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS) + f"""
pidfile {self.dir}/slapd.pid
argsfile {self.dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
{self._tls_config()}
database mdb
suffix "dc=example,dc=com"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {self.dir}/db
maxsize 16777216
overlay memberof
# Anyone may search (anonymous search is a setting the tests use); passwords are only compared.
access to attrs=userPassword by anonymous auth by * none
access to * by * read
""")
        return conf

    def _tls_config(self) -> str:
        if self.certs is None:
            return "# no certificate: StartTLS is refused, no ldaps://\n"
        return (f"TLSCACertificateFile {self.certs.ca}\nTLSCertificateFile {self.certs.cert}\n"
                f"TLSCertificateKeyFile {self.certs.key}\n")

    def start(self) -> Slapd:
        conf = self._write_config()
        ldif = self.dir / "preload.ldif"
        ldif.write_text(self.preload)
        subprocess.run(["slapadd", "-q", "-f", str(conf), "-l", str(ldif)], check=True,
                       capture_output=True, text=True)
        for _attempt in range(5):  # a free port can be taken between the look and slapd's bind
            self.port, self.tls_port = free_port(self.addr), free_port(self.addr)
            urls = f"{self.url('ldap')}/" + (f" {self.url('ldaps')}/" if self.certs else "")
            with open(self.dir / "slapd.log", "ab") as log:
                self.proc = subprocess.Popen(
                    ["slapd", "-f", str(conf), "-h", urls, "-d", "0"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if self._wait_listening():
                break
            self.stop()
        else:
            raise RuntimeError(f"slapd did not start:\n{self.log}")
        if self.online:
            subprocess.run(["ldapadd", "-x", "-H", self.url(), "-D", ROOT_DN, "-w", ROOT_PW],
                           input=self.online, check=True, capture_output=True, text=True)
        return self

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                for port in (self.port, self.tls_port) if self.certs else (self.port,):
                    socket.create_connection((self.addr, port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Slapd:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
