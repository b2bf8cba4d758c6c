"""Certificates and keys for the harness control plane (ECDSA P-256, made with ``cryptography``).

One self-signed CA signs the API server's serving certificate and a client certificate per identity:
the admin (``system:masters``), kube-controller-manager, kube-scheduler and the test node
(``system:node:<name>`` in ``system:nodes``, so the Node authorizer and NodeRestriction apply to the
node agent as they do to a kubelet). The node agent also gets a serving certificate for its pod-log
endpoint, and the API server a client certificate to call it (``--kubelet-client-certificate``).
A separate key pair signs service-account tokens.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
SERVICE_IP = "10.0.0.1"  # first address of --service-cluster-ip-range, the `kubernetes` service
APISERVER_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, *, ca: bool
) -> x509.CertificateBuilder:
    """What every certificate here shares: validity, basic constraints and key usage (signing keys
    for a CA, digital signatures for a leaf)."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _name(common_name: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return cert, key


class CertificateAuthority:
    """A self-signed CA that issues serving and client certificates."""

    def __init__(self, common_name: str = "hpo-harness-ca") -> None:
        self._key = _new_key()
        subject = _name(common_name)
        self._cert = (
            _builder(subject, subject, self._key.public_key(), ca=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def pair(self) -> KeyPair:
        return KeyPair(self._cert.public_bytes(serialization.Encoding.PEM), _key_pem(self._key))

    def issue(
        self,
        common_name: str,
        orgs: tuple[str, ...] = (),
        *,
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> KeyPair:
        """A leaf certificate: a client certificate, or a serving one (``server=True``) for dns/ips."""
        key = _new_key()
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            _builder(_name(common_name, orgs), self._cert.subject, key.public_key(), ca=False)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if dns or ips:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class Pki:
    """Paths of everything the control plane and its clients need."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    sa_key: Path
    sa_pub: Path
    clients: dict[str, KeyPair]  # identity name -> client certificate

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.read_bytes()


# identity name -> (common name, organizations)
def client_identities(node_name: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every client of the control plane; kube-proxy and CoreDNS run only with the real node."""
    return {
        "admin": ("kubernetes-admin", ("system:masters",)),
        "kube-controller-manager": ("system:kube-controller-manager", ()),
        "kube-scheduler": ("system:kube-scheduler", ()),
        "node": (f"system:node:{node_name}", ("system:nodes",)),
        "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ()),
        "kube-proxy": ("system:kube-proxy", ()),  # bound to system:node-proxier by the default RBAC
        "coredns": ("system:coredns", ()),  # bound by the harness (cluster.NODE_RBAC)
    }


def create_pki(directory: Path, node_name: str, node_ip: str = "127.0.0.1") -> Pki:
    """Write a CA, the API server's serving pair, the client pairs and the service-account keys.

    ``node_ip`` is the node's address when it is not loopback (the real node's bridge): the API server
    listens there too and the kubelet serves there."""
    ips = tuple(dict.fromkeys(("127.0.0.1", node_ip)))
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority()
    ca_cert, ca_key = ca.pair.write(directory, "ca")
    serving = ca.issue("kube-apiserver", server=True, dns=APISERVER_DNS, ips=(*ips, SERVICE_IP))
    apiserver_cert, apiserver_key = serving.write(directory, "apiserver")
    # The node agent serves pod logs to the API server like a kubelet (kubectl logs).
    ca.issue(f"system:node:{node_name}", server=True, dns=(node_name,), ips=ips).write(
        directory, "kubelet-serving"
    )
    clients: dict[str, KeyPair] = {}
    for name, (cn, orgs) in client_identities(node_name).items():
        clients[name] = ca.issue(cn, orgs)
        clients[name].write(directory, name)
    sa = _new_key()
    sa_key, sa_pub = directory / "sa.key", directory / "sa.pub"
    sa_key.write_bytes(_key_pem(sa))
    sa_key.chmod(0o600)
    sa_pub.write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(directory, ca_cert, ca_key, apiserver_cert, apiserver_key, sa_key, sa_pub, clients)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, client: KeyPair, user: str) -> Path:
    """A self-contained kubeconfig (certificates embedded) for one identity."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "hpo-harness", "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert_pem),
                    "client-key-data": _b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": "hpo-harness", "context": {"cluster": "hpo-harness", "user": user}}],
        "current-context": "hpo-harness",
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
