"""Identity tokens: keys from PEM files, RFC 7638 key ids, minting, the JWKS, and their config."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from extauthz_server.config.identity_token import (
    load_published_key,
    load_signing_key,
    parse_identity_token,
)
from extauthz_server.config.model import parse_config
from extauthz_server.config.reader import Section
from extauthz_server.core.identity_token import (
    DEFAULT_HEADER,
    JWT_TYP,
    IdentityTokenMinter,
    IdentityTokenSettings,
    jwks_document,
)
from extauthz_server.core.jwk import jwk_thumbprint
from extauthz_server.errors import ConfigError
from tests.support.signing_keys import (
    ec_key,
    ed25519_key,
    rsa_key,
    write_private_key,
    write_public_key,
)

# RFC 7638 §3.1: the example RSA key and the thumbprint the RFC computes for it.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
    "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu"
    "0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_KID = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

ALGORITHMS = ["ES256", "RS256"]


def verify(token: str, document: dict[str, Any], **expected: Any) -> dict[str, Any]:
    """What an upstream does: explicit `typ`, key by `kid` from the JWKS, signature, claims."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == JWT_TYP
    key = jwt.PyJWKSet.from_dict(document)[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=ALGORITHMS,
        issuer=expected.pop("issuer", "extauthz-server"),
        options={"require": ["iss", "sub", "iat", "exp", "jti"]},
        **expected,
    )
    return claims


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    write_private_key(directory / "es256.pem", ec_key())
    write_private_key(directory / "rs256.pem", rsa_key())
    write_private_key(directory / "other-es256.pem", ec_key())
    return directory


def settings_for(path: Path, **changes: Any) -> IdentityTokenSettings:
    return IdentityTokenSettings(load_signing_key(path, "identity_token.key_file"), **changes)


def test_thumbprint_of_the_rfc7638_example_key() -> None:
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}

    assert jwk_thumbprint(jwk) == RFC7638_KID


def test_kid_of_a_key_file_is_its_rfc7638_thumbprint(tmp_path: Path) -> None:
    n = int.from_bytes(jwt.utils.base64url_decode(RFC7638_N), "big")
    public = rsa.RSAPublicNumbers(65537, n).public_key()
    pem = tmp_path / "rfc.pub.pem"
    pem.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    published = load_published_key(pem, "k")

    assert published.kid == RFC7638_KID
    assert published.jwk == {
        "kty": "RSA",
        "n": RFC7638_N,
        "e": "AQAB",
        "kid": RFC7638_KID,
        "alg": "RS256",
        "use": "sig",
    }


@pytest.mark.parametrize(("file_name", "alg"), [("es256.pem", "ES256"), ("rs256.pem", "RS256")])
def test_minted_token_verifies_with_the_published_jwks(
    keys_dir: Path, file_name: str, alg: str
) -> None:
    settings = settings_for(keys_dir / file_name)
    now = time.time()

    minted = IdentityTokenMinter(settings).mint(
        "bob-id", ("creator", "viewer"), "forms", "web-app", now, None
    )
    claims = verify(minted.value, jwks_document(settings))

    assert jwt.get_unverified_header(minted.value) == {
        "alg": alg,
        "kid": settings.signing_key.kid,
        "typ": JWT_TYP,
    }
    assert claims["sub"] == "bob-id"
    assert claims["roles"] == ["creator", "viewer"]
    assert claims["route"] == "forms"
    assert claims["client_id"] == "web-app"
    assert claims["iss"] == "extauthz-server"
    assert claims["iat"] == int(now)
    assert claims["exp"] == int(now + 60) == minted.expires_at
    assert "aud" not in claims


def test_audience_and_issuer_are_configurable(keys_dir: Path) -> None:
    settings = settings_for(keys_dir / "es256.pem", issuer="https://authz.example", audience="api")

    minted = IdentityTokenMinter(settings).mint("s", (), "r", None, time.time(), None)
    claims = verify(
        minted.value, jwks_document(settings), issuer="https://authz.example", audience="api"
    )

    assert claims["aud"] == "api"
    assert "client_id" not in claims
    assert claims["roles"] == []
    with pytest.raises(jwt.InvalidAudienceError):
        verify(
            minted.value, jwks_document(settings), issuer="https://authz.example", audience="other"
        )


@pytest.mark.parametrize(
    ("identity_left_s", "expected_lifetime_s"),
    [(None, 60), (3600.0, 60), (10.5, 10), (60.0, 60), (0.4, 0)],
    ids=["no-identity-expiry", "identity-outlives-ttl", "identity-expires-first", "equal", "due"],
)
def test_exp_never_exceeds_the_identity_expiry(
    keys_dir: Path, identity_left_s: float | None, expected_lifetime_s: int
) -> None:
    now = 1_767_225_700.0
    identity_expires_at = None if identity_left_s is None else now + identity_left_s

    minted = IdentityTokenMinter(settings_for(keys_dir / "es256.pem")).mint(
        "s", (), "r", None, now, identity_expires_at
    )
    claims = jwt.decode(minted.value, options={"verify_signature": False})

    assert claims["exp"] == now + expected_lifetime_s == minted.expires_at
    assert identity_expires_at is None or claims["exp"] <= identity_expires_at
    assert minted.reuse_until == now + 0.75 * expected_lifetime_s


def test_jti_comes_from_the_injected_source(keys_dir: Path) -> None:
    ids = iter(["first", "second"])
    minter = IdentityTokenMinter(settings_for(keys_dir / "es256.pem"), new_jti=lambda: next(ids))

    tokens = [minter.mint("s", (), "r", None, 1_767_225_700.0, None).value for _ in range(2)]

    assert [jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens] == [
        "first",
        "second",
    ]


def test_random_jti_differs_between_tokens(keys_dir: Path) -> None:
    minter = IdentityTokenMinter(settings_for(keys_dir / "es256.pem"))

    jtis = {
        jwt.decode(
            minter.mint("s", (), "r", None, 0.0, None).value, options={"verify_signature": False}
        )["jti"]
        for _ in range(20)
    }

    assert len(jtis) == 20


def test_token_signed_by_an_unpublished_key_fails(keys_dir: Path) -> None:
    published = settings_for(keys_dir / "es256.pem")
    intruder = settings_for(keys_dir / "other-es256.pem")
    document = jwks_document(published)
    forged = IdentityTokenMinter(intruder).mint(
        "root", ("admin",), "admin", None, time.time(), None
    )

    with pytest.raises(KeyError):
        verify(forged.value, document)

    # The same key signing under the published key's kid fails on the signature.
    claims = jwt.decode(forged.value, options={"verify_signature": False})
    relabelled = jwt.encode(
        claims,
        intruder.signing_key.private_key,
        algorithm="ES256",
        headers={"kid": published.signing_key.kid, "typ": JWT_TYP},
    )
    with pytest.raises(jwt.InvalidSignatureError):
        verify(relabelled, document)


def test_jwks_publishes_previous_keys_after_the_signing_key(keys_dir: Path, tmp_path: Path) -> None:
    old = load_signing_key(keys_dir / "es256.pem", "k")
    retired_public = load_published_key(write_public_key(tmp_path / "old.pub", rsa_key()), "k")
    current = settings_for(
        keys_dir / "rs256.pem", previous_keys=(old.published, retired_public, old.published)
    )

    document = jwks_document(current)

    assert [key["kid"] for key in document["keys"]] == [
        current.signing_key.kid,
        old.kid,
        retired_public.kid,
    ]
    assert all(key["use"] == "sig" for key in document["keys"])
    assert all("d" not in key for key in document["keys"])


def test_token_of_the_old_key_verifies_during_a_rotation(keys_dir: Path) -> None:
    before = settings_for(keys_dir / "es256.pem")
    after = settings_for(keys_dir / "rs256.pem", previous_keys=(before.signing_key.published,))
    earlier_token = IdentityTokenMinter(before).mint("s", (), "r", None, time.time(), None)

    assert verify(earlier_token.value, jwks_document(after))["sub"] == "s"


def test_private_key_material_stays_out_of_repr(keys_dir: Path) -> None:
    settings = settings_for(keys_dir / "es256.pem")

    assert "private_key" not in repr(settings)


# --- configuration -------------------------------------------------------------------------


def parse(section: Mapping[str, object], base_dir: Path, taken: tuple[str, ...] = ()) -> Any:
    return parse_identity_token(Section(section, "identity_token"), base_dir, taken)


def test_absent_or_disabled_section_means_no_tokens(tmp_path: Path) -> None:
    assert parse({}, tmp_path) is None
    # Disabled: the key file is not even read.
    assert parse({"enabled": False, "key_file": "missing.pem", "ttl_seconds": 30}, tmp_path) is None


def test_key_file_alone_turns_tokens_on_with_defaults(keys_dir: Path) -> None:
    settings = parse({"key_file": "es256.pem"}, keys_dir)

    assert settings == IdentityTokenSettings(load_signing_key(keys_dir / "es256.pem", "k"))
    assert settings.header == DEFAULT_HEADER
    assert settings.ttl_s == 60


def test_full_section_in_the_config_file(seed_yaml: str, keys_dir: Path) -> None:
    text = seed_yaml + (
        "identity_token:\n"
        "  enabled: true\n"
        "  key_file: rs256.pem\n"
        "  previous_key_files: [es256.pem]\n"
        "  header: X-Upstream-Identity\n"
        "  issuer: https://authz.example\n"
        "  audience: orders-api\n"
        "  ttl_seconds: 120\n"
    )

    settings = parse_config(text, {}, base_dir=keys_dir).identity_token

    assert settings is not None
    assert settings.signing_key.alg == "RS256"
    assert [key.alg for key in settings.previous_keys] == ["ES256"]
    assert settings.header == "x-upstream-identity"
    assert (settings.issuer, settings.audience, settings.ttl_s) == (
        "https://authz.example",
        "orders-api",
        120,
    )


def test_environment_override_turns_tokens_on(seed_yaml: str, keys_dir: Path) -> None:
    config = parse_config(
        seed_yaml, {"EXTAUTHZ__IDENTITY_TOKEN__KEY_FILE": "es256.pem"}, base_dir=keys_dir
    )

    assert config.identity_token is not None
    assert config.identity_token.signing_key.alg == "ES256"


KeyWriter = Callable[[Path], object]

BAD_KEY_FILES: list[tuple[str, KeyWriter, str]] = [
    ("missing", lambda path: None, "cannot read"),
    (
        "ed25519",
        lambda path: write_private_key(path, ed25519_key()),
        "Ed25519 keys are not supported",
    ),
    ("rsa-1024", lambda path: write_private_key(path, rsa_key(1024)), "RSA key of 1024 bits"),
    ("ec-p384", lambda path: write_private_key(path, ec_key(ec.SECP384R1())), "curve secp384r1"),
    ("encrypted", lambda path: write_private_key(path, ec_key(), b"pw"), "encrypted"),
    ("public-only", lambda path: write_public_key(path, ec_key()), "not a PEM private key"),
    ("not-pem", lambda path: path.write_text("hello"), "not a PEM private key"),
    ("huge", lambda path: path.write_bytes(b"x" * 70_000), "larger than"),
]


@pytest.mark.parametrize(
    ("writer", "problem"), [case[1:] for case in BAD_KEY_FILES], ids=[c[0] for c in BAD_KEY_FILES]
)
def test_unusable_key_file_is_a_config_error_naming_the_key(
    tmp_path: Path, writer: KeyWriter, problem: str
) -> None:
    writer(tmp_path / "key.pem")

    with pytest.raises(ConfigError) as caught:
        parse({"key_file": "key.pem"}, tmp_path)

    assert caught.value.key_path == "identity_token.key_file"
    assert problem in caught.value.problem
    assert str(tmp_path / "key.pem") in caught.value.problem


def test_unusable_previous_key_names_its_list_index(keys_dir: Path, tmp_path: Path) -> None:
    write_public_key(tmp_path / "ed.pub", ed25519_key())
    (tmp_path / "junk.pub").write_text("junk")
    section = {"key_file": str(keys_dir / "es256.pem"), "previous_key_files": ["ed.pub"]}

    with pytest.raises(ConfigError, match=r"previous_key_files\[0\]: .*Ed25519"):
        parse(section, tmp_path)
    with pytest.raises(ConfigError, match=r"previous_key_files\[1\]: .*not a PEM public"):
        parse(section | {"previous_key_files": [str(keys_dir / "es256.pem"), "junk.pub"]}, tmp_path)


BAD_SECTIONS: list[tuple[str, dict[str, object], str, str]] = [
    ("enabled-without-key", {"enabled": True}, "identity_token.key_file", "is required"),
    ("header-with-space", {"header": "x auth"}, "identity_token.header", "not a usable"),
    ("header-pseudo", {"header": ":authority"}, "identity_token.header", "not a usable"),
    ("header-roles", {"header": "X-Auth-Roles"}, "identity_token.header", "already used"),
    ("ttl-too-short", {"ttl_seconds": 4}, "identity_token.ttl_seconds", "between 5 and 3600"),
    ("ttl-too-long", {"ttl_seconds": 3601}, "identity_token.ttl_seconds", "between 5 and 3600"),
    ("unknown-key", {"algorithm": "HS256"}, "identity_token.algorithm", "unknown key"),
    ("empty-issuer", {"issuer": ""}, "identity_token.issuer", "non-empty string"),
]


@pytest.mark.parametrize(
    ("changes", "key_path", "problem"),
    [case[1:] for case in BAD_SECTIONS],
    ids=[case[0] for case in BAD_SECTIONS],
)
def test_bad_section_is_a_config_error_naming_the_key(
    keys_dir: Path, changes: dict[str, object], key_path: str, problem: str
) -> None:
    section = {"key_file": "es256.pem"} | changes
    if changes.get("enabled") is True:
        del section["key_file"]

    with pytest.raises(ConfigError) as caught:
        parse(section, keys_dir, ("x-auth-subject", "x-auth-roles"))

    assert caught.value.key_path == key_path
    assert problem in caught.value.problem


@pytest.mark.parametrize("header", ["x-auth-roles", "X-Auth-Client", "authorization", "host"])
def test_token_header_may_not_reuse_a_configured_or_reserved_header(
    seed_yaml: str, keys_dir: Path, header: str
) -> None:
    text = seed_yaml + f"identity_token: {{key_file: es256.pem, header: {header}}}\n"

    with pytest.raises(ConfigError, match=r"^identity_token\.header: .*already used"):
        parse_config(text, {}, base_dir=keys_dir)
