"""Bearer JWTs: key material from settings, verification into a Principal, and minting for development."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from registry.auth.principal import Principal, Role
from registry.errors import AuthConfigError, Unauthorized
from registry.settings import Settings
from registry.wire.events import UUID_RE

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
JWK_CURVES = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
SUPPORTED = HMAC_ALGORITHMS | RSA_ALGORITHMS | frozenset(EC_ALGORITHMS.values()) | {"EdDSA"}
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash output
TIME_CLAIMS = ("exp", "nbf", "iat")  # NumericDate claims (RFC 7519 section 2): numbers, never strings


@dataclass(frozen=True)
class VerificationKey:
    """One key and the algorithms it may verify; ``kid`` is set for JWKS keys."""

    key: Any  # bytes (HMAC secret) or a cryptography public key
    usable: frozenset[str]  # every algorithm this kind of key can verify
    default: str  # the algorithm allowed when JOBREG_AUTH_ALGORITHMS is empty
    kid: str | None = None
    source: str = ""


def _asymmetric(public: Any, source: str, kid: str | None = None, alg: str | None = None) -> VerificationKey:
    if isinstance(public, rsa.RSAPublicKey):
        usable, default = RSA_ALGORITHMS, "RS256"
    elif isinstance(public, ec.EllipticCurvePublicKey):
        curve_alg = EC_ALGORITHMS.get(public.curve.name)
        if curve_alg is None:
            raise AuthConfigError(f"{source}: unsupported elliptic curve {public.curve.name}")
        usable, default = frozenset({curve_alg}), curve_alg
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        usable, default = frozenset({"EdDSA"}), "EdDSA"
    else:
        raise AuthConfigError(f"{source}: unsupported key type {type(public).__name__}")
    if alg is not None:
        if alg not in usable:
            raise AuthConfigError(f"{source}: key {kid or ''} declares alg {alg!r}, which its key type cannot verify")
        usable, default = frozenset({alg}), alg
    return VerificationKey(public, usable, default, kid, source)


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"{setting}={path}: cannot read ({exc.strerror})") from None


def _pem_key(path: str) -> VerificationKey:
    data = _read(path, "JOBREG_AUTH_PUBLIC_KEY_FILE")
    source = f"JOBREG_AUTH_PUBLIC_KEY_FILE={path}"
    if b"PRIVATE KEY" in data:
        raise AuthConfigError(f"{source}: holds a private key; give the API only the public key")
    try:
        public: Any = (
            x509.load_pem_x509_certificate(data).public_key()
            if b"BEGIN CERTIFICATE" in data
            else load_pem_public_key(data)
        )
    except ValueError:
        raise AuthConfigError(f"{source}: not a PEM public key or certificate") from None
    return _asymmetric(public, source)


def _jwks_keys(path: str) -> list[VerificationKey]:
    source = f"JOBREG_AUTH_JWKS_FILE={path}"
    try:
        doc = json.loads(_read(path, "JOBREG_AUTH_JWKS_FILE"))
    except ValueError:
        raise AuthConfigError(f"{source}: not JSON") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise AuthConfigError(f'{source}: expected {{"keys": [...]}} with at least one key')
    out: list[VerificationKey] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise AuthConfigError(f"{source}: key #{i} is not an object")
        if entry.get("use", "sig") != "sig":
            continue  # encryption keys never verify signatures
        kty, kid, alg = entry.get("kty"), entry.get("kid"), entry.get("alg")
        if kty == "oct":
            raise AuthConfigError(f"{source}: key #{i} is symmetric; put a shared secret in JOBREG_AUTH_SECRET")
        if "d" in entry:
            raise AuthConfigError(f"{source}: key #{i} is a private key; publish only public keys")
        if alg is not None and alg not in SUPPORTED:
            raise AuthConfigError(f"{source}: key #{i} has unsupported alg {alg!r}")
        try:
            public = jwt.PyJWK(entry).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, KeyError, TypeError) as exc:
            raise AuthConfigError(f"{source}: key #{i} is unusable ({exc})") from None
        out.append(_asymmetric(public, source, kid if isinstance(kid, str) else None, alg))
    if not out:
        raise AuthConfigError(f"{source}: no signature keys")
    return out


def _parse_algorithms(text: str) -> list[str]:
    names = [a.strip() for a in text.split(",") if a.strip()]
    for name in names:
        if name.lower() == "none":
            raise AuthConfigError('JOBREG_AUTH_ALGORITHMS: "none" (unsigned tokens) is never accepted')
        if name not in SUPPORTED:
            raise AuthConfigError(
                f"JOBREG_AUTH_ALGORITHMS: unsupported algorithm {name!r} ({', '.join(sorted(SUPPORTED))})"
            )
    return names


def auth_configured(settings: Settings) -> bool:
    """Whether any key material is configured, i.e. whether the API authenticates requests."""
    return bool(settings.auth_secret or settings.auth_public_key_file or settings.auth_jwks_file)


@dataclass(frozen=True)
class Verifier:
    """Verifies bearer tokens against pinned algorithms and configured keys only."""

    keys: tuple[VerificationKey, ...]
    algorithms: frozenset[str]
    issuer: str
    audience: str
    leeway_s: int
    user_claim: str
    projects_claim: str
    role_claim: str
    admin_role: str
    max_projects: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier | None:  # noqa: C901  one check per auth setting, each with its own message
        """The verifier the settings describe; None when no key material is configured (auth off)."""
        if not auth_configured(settings):
            if settings.auth_algorithms.strip():
                raise AuthConfigError("JOBREG_AUTH_ALGORITHMS is set but no key is configured")
            return None
        for name in ("issuer", "audience", "user_claim", "projects_claim", "role_claim", "admin_role"):
            if not getattr(settings, f"auth_{name}").strip():
                raise AuthConfigError(f"JOBREG_AUTH_{name.upper()} must not be empty")
        if settings.auth_leeway_s < 0:
            raise AuthConfigError("JOBREG_AUTH_LEEWAY_S must be >= 0")
        if settings.auth_max_projects < 1:
            raise AuthConfigError("JOBREG_AUTH_MAX_PROJECTS must be >= 1")
        keys: list[VerificationKey] = []
        if settings.auth_secret:
            secret = settings.auth_secret.encode()
            if len(secret) < MIN_SECRET_BYTES:
                raise AuthConfigError(f"JOBREG_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes")
            keys.append(VerificationKey(secret, HMAC_ALGORITHMS, "HS256", source="JOBREG_AUTH_SECRET"))
        if settings.auth_public_key_file:
            keys.append(_pem_key(settings.auth_public_key_file))
        if settings.auth_jwks_file:
            keys += _jwks_keys(settings.auth_jwks_file)
        explicit = _parse_algorithms(settings.auth_algorithms)
        for alg in explicit:
            if not any(alg in k.usable for k in keys):
                raise AuthConfigError(f"JOBREG_AUTH_ALGORITHMS: no configured key can verify {alg}")
            hash_bytes = int(alg[2:]) // 8 if alg in HMAC_ALGORITHMS else 0
            if len(settings.auth_secret.encode()) < hash_bytes:
                raise AuthConfigError(f"{alg} needs a JOBREG_AUTH_SECRET of at least {hash_bytes} bytes")
        algorithms = frozenset(explicit) if explicit else frozenset(k.default for k in keys)
        return cls(
            keys=tuple(keys),
            algorithms=algorithms,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            leeway_s=settings.auth_leeway_s,
            user_claim=settings.auth_user_claim,
            projects_claim=settings.auth_projects_claim,
            role_claim=settings.auth_role_claim,
            admin_role=settings.auth_admin_role,
            max_projects=settings.auth_max_projects,
        )

    def _candidates(self, alg: str, kid: Any) -> list[VerificationKey]:
        # The algorithm picks the key family, so an HS256 token is only ever checked against the
        # shared secret, never against a public key used as an HMAC secret.
        fitting = [k for k in self.keys if alg in k.usable]
        if isinstance(kid, str):
            named = [k for k in fitting if k.kid == kid]
            return named or [k for k in fitting if k.kid is None]
        return fitting

    def verify(self, token: str) -> Principal:
        """The token's principal; raises Unauthorized with a fixed reason (never token content)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthorized("token algorithm not accepted")
        candidates = self._candidates(alg, header.get("kid"))
        if not candidates:
            raise Unauthorized("no key for this token")
        claims: dict[str, Any] | None = None
        for candidate in candidates:
            try:
                claims = jwt.decode(
                    token,
                    candidate.key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway_s,
                    options={"require": ["exp", "iss", "aud"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue  # another key of the same family may have signed it
            except jwt.PyJWTError as exc:
                raise Unauthorized(_reason(exc)) from None
        if claims is None:
            raise Unauthorized("token signature invalid")
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        for name in TIME_CLAIMS:
            value = claims.get(name, 0)
            # RFC 7519 NumericDate is a JSON number. PyJWT also accepts a numeric string ("exp":
            # "1796000000") and checks it, but a string expiry would then be honoured in one place
            # and not in another (a watch stream outliving its token): refuse it everywhere.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Unauthorized(f"token {name} claim must be a number")
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user:
            raise Unauthorized("token has no user id")
        role_claim = claims.get(self.role_claim)
        roles = role_claim if isinstance(role_claim, list) else [role_claim]
        # Anything but the admin role is a plain user: an unexpected value never grants more.
        role = Role.ADMIN if self.admin_role in roles else Role.USER
        projects = claims.get(self.projects_claim, [])
        if isinstance(projects, list) and len(projects) > self.max_projects and role is not Role.ADMIN:
            # Every list and stats call of a user checks each of their projects: a token naming
            # 10,000 cost about 0.5 s a call. An operator sees everything and needs no list.
            raise Unauthorized(f"token names more than {self.max_projects} projects")
        if not isinstance(projects, list) or not all(isinstance(p, str) and UUID_RE.match(p) for p in projects):
            raise Unauthorized("token projects claim must be a list of project UUIDs")
        return Principal(
            user_id=user,
            projects=frozenset(p.lower() for p in projects),
            role=role,
            expires_at=int(claims["exp"]),
        )


# Ordered: more specific exception classes first (InvalidSignatureError is a DecodeError).
_REASONS: Sequence[tuple[type[jwt.PyJWTError], str]] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.InvalidIssuedAtError, "token issued-at claim invalid"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim (exp, iss, aud)"),
    (jwt.InvalidSignatureError, "token signature invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm not accepted"),
    (jwt.InvalidKeyError, "token signature invalid"),
    (jwt.DecodeError, "malformed token"),
)


def _reason(exc: jwt.PyJWTError) -> str:
    for cls, reason in _REASONS:
        if isinstance(exc, cls):
            return reason
    return "invalid token"


def parse_ttl(text: str) -> int:
    """Seconds from '3600', '90s', '30m', '12h' or '7d'."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    scale = units.get(text[-1:], 0)
    number = text[:-1] if scale else text
    if not number.isdigit() or int(number) <= 0:
        raise ValueError(f"invalid TTL {text!r}: use seconds or a number with s, m, h or d")
    return int(number) * (scale or 1)


def mint(
    settings: Settings,
    user_id: str,
    projects: Iterable[str],
    *,
    admin: bool = False,
    ttl_s: int | None = None,
    now: int | None = None,
) -> str:
    """An HS256 token for development, signed with JOBREG_AUTH_SECRET, with the configured claims."""
    if not settings.auth_secret:
        raise AuthConfigError("JOBREG_AUTH_SECRET is not set: `jobreg token` signs with the shared HS256 secret")
    verifier = Verifier.from_settings(settings)
    assert verifier is not None
    if "HS256" not in verifier.algorithms:
        raise AuthConfigError("HS256 is not in JOBREG_AUTH_ALGORITHMS: the API would reject this token")
    if not user_id:
        raise ValueError("a user id is required")
    project_list = list(dict.fromkeys(p.lower() for p in projects))
    for p in project_list:
        if not UUID_RE.match(p):
            raise ValueError(f"project {p!r} is not a UUID")
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": settings.auth_issuer,
        "aud": settings.auth_audience,
        settings.auth_user_claim: user_id,
        settings.auth_projects_claim: project_list,
        settings.auth_role_claim: settings.auth_admin_role if admin else Role.USER.value,
        "iat": issued,
        "nbf": issued,
        "exp": issued + (settings.auth_token_ttl_s if ttl_s is None else ttl_s),
    }
    return jwt.encode(claims, settings.auth_secret, algorithm="HS256")


def serving_verifier(settings: Settings, no_auth: bool) -> Verifier | None:
    """The verifier an API server runs with; refuses to serve unauthenticated unless told ``no_auth``."""
    verifier = Verifier.from_settings(settings)
    if verifier is None and not no_auth:
        raise AuthConfigError(
            "no authentication configured: set JOBREG_AUTH_SECRET, JOBREG_AUTH_PUBLIC_KEY_FILE or "
            "JOBREG_AUTH_JWKS_FILE (README: Authentication), or pass --no-auth to let anyone see every job"
        )
    if verifier is not None and no_auth:
        raise AuthConfigError("--no-auth conflicts with the JOBREG_AUTH_* keys that are set; drop one of them")
    return verifier
