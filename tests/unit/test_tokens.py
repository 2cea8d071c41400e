"""Bearer-token verification edge cases, key material and configuration errors, with real keys and PyJWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from registry.auth.principal import Principal, Role
from registry.auth.tokens import Verifier, mint, serving_verifier
from registry.errors import AuthConfigError, Unauthorized
from registry.settings import Settings, load_settings

SECRET = "s3cret-" + "x" * 40
P1 = "11111111-1111-4111-8111-111111111111"
P2 = "22222222-2222-4222-8222-222222222222"


def settings(**kw: Any) -> Settings:
    return load_settings({}, **kw)


def verifier(**kw: Any) -> Verifier:
    v = Verifier.from_settings(settings(**kw))
    assert v is not None
    return v


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "jobreg",
        "aud": "jobreg",
        "sub": "alice",
        "projects": [P1],
        "iat": now,
        "exp": now + 600,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def rejected(v: Verifier, token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        v.verify(token)
    assert (not token or token not in str(info.value)) and info.value.presented
    return info.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built without PyJWT (which refuses to produce some of these attacks)."""
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b"" if key is None else hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(sig)}"


def pem(public: Any) -> bytes:
    data: bytes = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_other() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def jwk(public: Any, kid: str | None = None, alg: str | None = None) -> dict[str, Any]:
    algo = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    out: dict[str, Any] = json.loads(algo.to_jwk(public))
    if kid:
        out["kid"] = kid
    if alg:
        out["alg"] = alg
    return out


# -- HS256 ---------------------------------------------------------------------------------


def test_minted_token_round_trips() -> None:
    s = settings(auth_secret=SECRET)
    token = mint(s, "alice", [P1.upper(), P2, P1], now=int(time.time()))
    p = verifier(auth_secret=SECRET).verify(token)
    assert p == Principal(user_id="alice", projects=frozenset({P1, P2}), role=Role.USER, expires_at=p.expires_at)
    assert p.expires_at is not None and abs(p.expires_at - time.time() - 3600) < 5
    admin = verifier(auth_secret=SECRET).verify(mint(s, "root", [], admin=True, ttl_s=60))
    assert admin.is_admin and admin.projects == frozenset()


def test_wrong_secret_and_tampering() -> None:
    v = verifier(auth_secret=SECRET)
    other = jwt.encode(claims(), "another-secret-" + "y" * 40, algorithm="HS256")
    assert rejected(v, other) == "token signature invalid"
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    header, payload, sig = good.split(".")
    forged = b64(json.dumps(claims(projects=[P1, P2])).encode())
    assert rejected(v, f"{header}.{forged}.{sig}") == "token signature invalid"
    assert rejected(v, f"{header}.{payload}.") == "token signature invalid"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(alg: str) -> None:
    v = verifier(auth_secret=SECRET)
    assert rejected(v, hand_made({"alg": alg, "typ": "JWT"}, claims(), None)) == "token algorithm not accepted"
    if alg == "none":
        assert rejected(v, jwt.encode(claims(), None, algorithm="none")) == "token algorithm not accepted"


def test_other_hmac_strengths_are_not_accepted_unless_listed() -> None:
    long_secret = SECRET * 2  # HS512 wants a 64-byte key
    token = jwt.encode(claims(), long_secret, algorithm="HS512")
    assert rejected(verifier(auth_secret=long_secret), token) == "token algorithm not accepted"
    assert verifier(auth_secret=long_secret, auth_algorithms="HS256,HS512").verify(token).user_id == "alice"
    assert "at least 64 bytes" in config_error(auth_secret=SECRET, auth_algorithms="HS512")


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "token expired"),
        ({"nbf": int(time.time()) + 3600}, "token not yet valid"),
        ({"iat": int(time.time()) + 3600}, "token not yet valid"),
        ({"aud": "someone-else"}, "token audience not accepted"),
        ({"aud": ["a", "b"]}, "token audience not accepted"),
        ({"iss": "https://evil.example"}, "token issuer not accepted"),
        ({"exp": None}, "token lacks a required claim (exp, iss, aud)"),
        ({"aud": None}, "token lacks a required claim (exp, iss, aud)"),
        ({"iss": None}, "token lacks a required claim (exp, iss, aud)"),
        ({"exp": "tomorrow"}, "malformed token"),
        # Issue 12, finding 7: a numeric string verified, but a watch stream never ended at it.
        ({"exp": str(int(time.time()) + 3600)}, "token exp claim must be a number"),
        ({"nbf": str(int(time.time()) - 10)}, "token nbf claim must be a number"),
        ({"iat": str(int(time.time()) - 10)}, "token iat claim must be a number"),
        ({"sub": None}, "token has no user id"),
        ({"sub": ""}, "token has no user id"),
        ({"projects": P1}, "token projects claim must be a list of project UUIDs"),
        ({"projects": ["not-a-uuid"]}, "token projects claim must be a list of project UUIDs"),
        ({"projects": [P1, 7]}, "token projects claim must be a list of project UUIDs"),
    ],
)
def test_claim_checks(over: dict[str, Any], reason: str) -> None:
    v = verifier(auth_secret=SECRET)
    assert rejected(v, jwt.encode(claims(**over), SECRET, algorithm="HS256")) == reason


def test_project_count_is_bounded() -> None:
    """Issue 12, finding 11: a token naming 10,000 projects cost ~0.5 s per list call; users get a bound."""
    many = [str(uuid.UUID(int=i)) for i in range(1, 1002)]
    v = verifier(auth_secret=SECRET)
    assert v.verify(jwt.encode(claims(projects=many[:1000]), SECRET, algorithm="HS256")).projects
    assert rejected(v, jwt.encode(claims(projects=many), SECRET, algorithm="HS256")) == (
        "token names more than 1000 projects"
    )
    small = verifier(auth_secret=SECRET, auth_max_projects=2)
    assert rejected(small, jwt.encode(claims(projects=many[:3]), SECRET, algorithm="HS256")).startswith("token names")
    assert small.verify(jwt.encode(claims(projects=many[:3], role="admin"), SECRET, algorithm="HS256")).is_admin


def test_leeway_and_audience_lists() -> None:
    v = verifier(auth_secret=SECRET, auth_leeway_s=30)
    assert v.verify(jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256"))
    assert rejected(v, jwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256")) == "token expired"
    assert v.verify(jwt.encode(claims(aud=["other", "jobreg"]), SECRET, algorithm="HS256"))


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "####.$$$$.%%%%", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_malformed_tokens(token: str) -> None:
    assert rejected(verifier(auth_secret=SECRET), token) in {"malformed token", "token signature invalid"}


def test_roles_and_custom_claim_names() -> None:
    v = verifier(
        auth_secret=SECRET,
        auth_user_claim="uid",
        auth_projects_claim="https://pasqal.example/projects",
        auth_role_claim="roles",
        auth_admin_role="operator",
    )

    def principal(**extra: Any) -> Principal:
        body = claims(sub=None, projects=None, uid="bob", **{"https://pasqal.example/projects": [P2.upper()]})
        return v.verify(jwt.encode({**body, **extra}, SECRET, algorithm="HS256"))

    assert principal() == Principal(user_id="bob", projects=frozenset({P2}), expires_at=principal().expires_at)
    assert principal(roles="operator").is_admin
    assert principal(roles=["viewer", "operator"]).is_admin
    # Nothing but the admin role itself grants more than a user's view.
    for role in ("admin", "Operator", "superuser", ["admin"], 1, None):
        assert not principal(roles=role).is_admin


# -- RS256 / ES256: PEM and JWKS ------------------------------------------------------------


def test_rs256_and_es256_via_pem(tmp_path: Path, rsa_key: Any, ec_key: Any, rsa_other: Any) -> None:
    rv = verifier(auth_public_key_file=write(tmp_path, "rsa.pem", pem(rsa_key.public_key())))
    assert rv.algorithms == {"RS256"}
    assert rv.verify(jwt.encode(claims(), rsa_key, algorithm="RS256")).user_id == "alice"
    assert rejected(rv, jwt.encode(claims(), rsa_other, algorithm="RS256")) == "token signature invalid"
    assert rejected(rv, jwt.encode(claims(), rsa_key, algorithm="PS256")) == "token algorithm not accepted"
    assert rejected(rv, jwt.encode(claims(), ec_key, algorithm="ES256")) == "token algorithm not accepted"
    assert rejected(rv, jwt.encode(claims(), SECRET, algorithm="HS256")) == "token algorithm not accepted"
    assert rejected(rv, jwt.encode(claims(exp=1), rsa_key, algorithm="RS256")) == "token expired"

    ev = verifier(auth_public_key_file=write(tmp_path, "ec.pem", pem(ec_key.public_key())))
    assert ev.algorithms == {"ES256"}
    assert ev.verify(jwt.encode(claims(), ec_key, algorithm="ES256")).projects == {P1}
    assert rejected(ev, jwt.encode(claims(), rsa_key, algorithm="RS256")) == "token algorithm not accepted"
    other_ec = ec.generate_private_key(ec.SECP256R1())
    assert rejected(ev, jwt.encode(claims(), other_ec, algorithm="ES256")) == "token signature invalid"


def test_hs_rs_confusion(tmp_path: Path, rsa_key: Any) -> None:
    """An HS256 token "signed" with the RSA public key as the HMAC secret never verifies."""
    public_pem = pem(rsa_key.public_key())
    path = write(tmp_path, "rsa.pem", public_pem)
    forged = hand_made({"alg": "HS256", "typ": "JWT"}, claims(role="admin"), public_pem)
    assert rejected(verifier(auth_public_key_file=path), forged) == "token algorithm not accepted"
    # Even with HS256 allowed (a shared secret is configured too), the public key is never an HMAC key.
    both = verifier(auth_public_key_file=path, auth_secret=SECRET, auth_algorithms="HS256,RS256")
    assert rejected(both, forged) == "token signature invalid"
    assert both.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"))
    assert both.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))


def test_embedded_jwk_header_is_ignored(tmp_path: Path, rsa_key: Any, rsa_other: Any) -> None:
    v = verifier(auth_public_key_file=write(tmp_path, "rsa.pem", pem(rsa_key.public_key())))
    attack = jwt.encode(
        claims(), rsa_other, algorithm="RS256", headers={"jwk": jwk(rsa_other.public_key()), "jku": "http://x/"}
    )
    assert rejected(v, attack) == "token signature invalid"


def test_jwks_file(tmp_path: Path, rsa_key: Any, rsa_other: Any, ec_key: Any) -> None:
    doc = {
        "keys": [
            jwk(rsa_key.public_key(), kid="r1"),
            jwk(rsa_other.public_key(), kid="r2", alg="RS256"),
            jwk(ec_key.public_key(), kid="e1"),
            {**jwk(rsa_other.public_key(), kid="enc"), "use": "enc"},
        ]
    }
    v = verifier(auth_jwks_file=write(tmp_path, "jwks.json", json.dumps(doc)))
    assert v.algorithms == {"RS256", "ES256"}
    assert v.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "r1"})).user_id == "alice"
    assert v.verify(jwt.encode(claims(), rsa_other, algorithm="RS256", headers={"kid": "r2"}))
    assert v.verify(jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "e1"}))
    # Without a kid every key of the token's family is tried.
    assert v.verify(jwt.encode(claims(), rsa_other, algorithm="RS256"))
    # A kid naming another key than the one that signed.
    assert rejected(v, jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "r2"})) == (
        "token signature invalid"
    )
    assert rejected(v, jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "zz"})) == (
        "no key for this token"
    )
    assert rejected(v, jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "r1"})) == (
        "no key for this token"
    )
    unknown = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert rejected(v, jwt.encode(claims(), unknown, algorithm="RS256")) == "token signature invalid"
    assert rejected(v, jwt.encode(claims(), SECRET, algorithm="HS256")) == "token algorithm not accepted"


def test_explicit_algorithm_pinning(tmp_path: Path, rsa_key: Any) -> None:
    path = write(tmp_path, "rsa.pem", pem(rsa_key.public_key()))
    ps = jwt.encode(claims(), rsa_key, algorithm="PS256")
    assert rejected(verifier(auth_public_key_file=path), ps) == "token algorithm not accepted"
    v = verifier(auth_public_key_file=path, auth_algorithms=" PS256 , RS256")
    assert v.verify(ps) and v.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"))
    only_ps = verifier(auth_public_key_file=path, auth_algorithms="PS256")
    assert rejected(only_ps, jwt.encode(claims(), rsa_key, algorithm="RS256")) == "token algorithm not accepted"


# -- configuration ---------------------------------------------------------------------------


def config_error(**kw: Any) -> str:
    with pytest.raises(AuthConfigError) as info:
        Verifier.from_settings(settings(**kw))
    return str(info.value)


def test_configuration_errors(tmp_path: Path, rsa_key: Any) -> None:
    rsa_pem = write(tmp_path, "rsa.pem", pem(rsa_key.public_key()))
    private = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert "at least 32 bytes" in config_error(auth_secret="short")
    assert '"none"' in config_error(auth_secret=SECRET, auth_algorithms="HS256,none")
    assert "unsupported algorithm" in config_error(auth_secret=SECRET, auth_algorithms="HS1024")
    assert "no configured key can verify RS256" in config_error(auth_secret=SECRET, auth_algorithms="RS256")
    assert "no configured key can verify HS256" in config_error(auth_public_key_file=rsa_pem, auth_algorithms="HS256")
    assert "no key is configured" in config_error(auth_algorithms="RS256")
    assert "must not be empty" in config_error(auth_secret=SECRET, auth_issuer="")
    assert "must not be empty" in config_error(auth_secret=SECRET, auth_audience=" ")
    assert "cannot read" in config_error(auth_public_key_file=str(tmp_path / "missing.pem"))
    assert "private key" in config_error(auth_public_key_file=write(tmp_path, "priv.pem", private))
    assert "not a PEM" in config_error(auth_public_key_file=write(tmp_path, "junk.pem", "hello"))
    assert "unsupported key type" not in config_error(auth_jwks_file=write(tmp_path, "j0.json", "[]"))
    assert "not JSON" in config_error(auth_jwks_file=write(tmp_path, "j1.json", "{"))
    oct_key = {"keys": [{"kty": "oct", "k": b64(SECRET.encode())}]}
    assert "symmetric" in config_error(auth_jwks_file=write(tmp_path, "j2.json", json.dumps(oct_key)))
    priv_jwk = {"keys": [json.loads(RSAAlgorithm.to_jwk(rsa_key))]}
    assert "private key" in config_error(auth_jwks_file=write(tmp_path, "j3.json", json.dumps(priv_jwk)))
    mismatch = {"keys": [jwk(rsa_key.public_key(), kid="k", alg="ES256")]}
    assert "key #0" in config_error(auth_jwks_file=write(tmp_path, "j4.json", json.dumps(mismatch)))
    assert Verifier.from_settings(settings()) is None


def test_eddsa_keys_are_supported(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    v = verifier(auth_public_key_file=write(tmp_path, "ed.pem", pem(key.public_key())))
    assert v.algorithms == {"EdDSA"} and v.verify(jwt.encode(claims(), key, algorithm="EdDSA"))


def test_serving_needs_a_decision() -> None:
    with pytest.raises(AuthConfigError, match="--no-auth"):
        serving_verifier(settings(), no_auth=False)
    assert serving_verifier(settings(), no_auth=True) is None
    with pytest.raises(AuthConfigError, match="conflicts"):
        serving_verifier(settings(auth_secret=SECRET), no_auth=True)
    assert serving_verifier(settings(auth_secret=SECRET), no_auth=False) is not None


def test_mint_errors_and_secret_never_in_repr() -> None:
    with pytest.raises(AuthConfigError, match="JOBREG_AUTH_SECRET is not set"):
        mint(settings(), "alice", [P1])
    with pytest.raises(ValueError, match="not a UUID"):
        mint(settings(auth_secret=SECRET), "alice", ["p1"])
    with pytest.raises(AuthConfigError, match="HS256 is not in"):
        mint(settings(auth_secret=SECRET * 2, auth_algorithms="HS512"), "alice", [P1])
    s = settings(auth_secret=SECRET)
    assert SECRET not in repr(s) and SECRET not in str(s) and "auth_secret='***'" in repr(s)
    # The custom repr leaves the struct's value semantics alone.
    assert s == settings(auth_secret=SECRET) and s.auth_secret == SECRET
