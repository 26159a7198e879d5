"""DPoP proofs (RFC 9449 §4.3) judged against the request and token they came with."""

from __future__ import annotations

import base64
import json
import warnings

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.warnings import InsecureKeyLengthWarning

from extauthz_server.core.dpop import (
    MAX_JTI_CHARS,
    DpopProof,
    DpopRules,
    ProofProblem,
    ProofVerifier,
    normalise_uri,
    request_uri,
    token_hash,
)
from tests.support.dpop import DpopKey, access_token_hash

NOW = 1_767_225_700.0
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln"
ORIGIN = "https://api.example.com"
URL = f"{ORIGIN}/api/forms/1"
RULES = DpopRules()
KEY = DpopKey()


def verify(
    proof: str | None,
    *,
    method: str = "GET",
    uri: str | None = URL,
    token: str = TOKEN,
    rules: DpopRules = RULES,
) -> DpopProof | ProofProblem:
    expected = normalise_uri(uri) if uri is not None else None
    return ProofVerifier(rules).verify(proof, method, expected, token, NOW)


def fresh(key: DpopKey = KEY, **changes: object) -> str:
    return key.proof("GET", URL, TOKEN, iat=NOW, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    [DpopKey(), DpopKey.rsa(), DpopKey.rsa(alg="RS256"), DpopKey.ed25519()],
    ids=["ES256", "PS256", "RS256", "EdDSA"],
)
def test_a_fresh_proof_names_its_key_and_jti(key: DpopKey) -> None:
    assert verify(key.proof("GET", URL, TOKEN, iat=NOW, jti="j-1")) == DpopProof(
        key.thumbprint, "j-1"
    )


def test_ath_is_the_base64url_sha256_of_the_token() -> None:
    assert token_hash(TOKEN) == access_token_hash(TOKEN)


def _other_signature(proof: str) -> str:
    header, payload, _ = proof.split(".")
    forged = DpopKey().proof("GET", URL, TOKEN, iat=NOW)
    return f"{header}.{payload}.{forged.split('.')[2]}"


def _with_payload(proof: str, **claims: object) -> str:
    header, payload, signature = proof.split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=="))
    document.update(claims)
    encoded = base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


def _private_jwk() -> dict[str, object]:
    algorithm = jwt.get_algorithm_by_name("ES256")
    return json.loads(algorithm.to_jwk(KEY.private_key))  # type: ignore[no-any-return]


def _weak_rsa_proof() -> str:
    with warnings.catch_warnings():
        # The client's library warns about the key, which is what the server must refuse.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return DpopKey.rsa(bits=1024).proof("GET", URL, TOKEN, iat=NOW)


PROBLEMS: list[tuple[str, str | None, ProofProblem]] = [
    ("no-header", None, ProofProblem.MISSING),
    ("empty-header", "  ", ProofProblem.MISSING),
    ("two-proofs-joined", fresh() + ", " + fresh(), ProofProblem.SEVERAL),
    ("not-a-jws", "garbage", ProofProblem.MALFORMED),
    ("five-segments", "a.b.c.d.e", ProofProblem.MALFORMED),
    ("header-not-json", "bm90anNvbg.e30.c2ln", ProofProblem.MALFORMED),
    ("padded-signature", fresh() + "==", ProofProblem.MALFORMED),
    ("oversized", "a." + "b" * 9000 + ".c", ProofProblem.MALFORMED),
    ("typ-JWT", fresh(header={"typ": "JWT"}), ProofProblem.WRONG_TYPE),
    ("typ-missing", fresh(header={"typ": None}), ProofProblem.WRONG_TYPE),
    ("crit-header", fresh(header={"crit": ["exp"]}), ProofProblem.MALFORMED),
    ("no-jwk", fresh(header={"jwk": None}), ProofProblem.KEY),
    ("private-jwk", fresh(header={"jwk": _private_jwk()}), ProofProblem.KEY),
    ("symmetric-jwk", fresh(header={"jwk": {"kty": "oct", "k": "c2VjcmV0"}}), ProofProblem.KEY),
    ("jwk-missing-y", fresh(header={"jwk": {**KEY.public_jwk, "y": None}}), ProofProblem.KEY),
    ("jwk-of-another-type", fresh(header={"jwk": DpopKey.rsa().public_jwk}), ProofProblem.KEY),
    ("rsa-1024", _weak_rsa_proof(), ProofProblem.KEY),
    (
        "jwk-of-another-key",
        fresh(header={"jwk": DpopKey().public_jwk}),
        ProofProblem.SIGNATURE,
    ),
    ("signature-of-another-key", _other_signature(fresh()), ProofProblem.SIGNATURE),
    ("payload-changed", _with_payload(fresh(), htm="GET"), ProofProblem.SIGNATURE),
    ("no-jti", fresh(drop=("jti",)), ProofProblem.CLAIMS),
    ("empty-jti", fresh(claims={"jti": ""}), ProofProblem.CLAIMS),
    ("long-jti", fresh(jti="j" * (MAX_JTI_CHARS + 1)), ProofProblem.CLAIMS),
    ("no-htm", fresh(drop=("htm",)), ProofProblem.CLAIMS),
    ("no-htu", fresh(drop=("htu",)), ProofProblem.CLAIMS),
    ("no-iat", fresh(drop=("iat",)), ProofProblem.CLAIMS),
    ("iat-a-string", fresh(claims={"iat": str(int(NOW))}), ProofProblem.CLAIMS),
    ("htm-POST", fresh(claims={"htm": "POST"}), ProofProblem.METHOD),
    ("htm-lower-case", fresh(claims={"htm": "get"}), ProofProblem.METHOD),
    ("htu-other-path", fresh(claims={"htu": URL + "/2"}), ProofProblem.URI),
    (
        "htu-other-host",
        fresh(claims={"htu": URL.replace("api.", "evil.")}),
        ProofProblem.URI,
    ),
    ("htu-http", fresh(claims={"htu": URL.replace("https", "http")}), ProofProblem.URI),
    (
        "htu-other-port",
        fresh(claims={"htu": URL.replace(".com", ".com:8443")}),
        ProofProblem.URI,
    ),
    ("htu-not-a-uri", fresh(claims={"htu": "/api/forms/1"}), ProofProblem.URI),
    ("iat-26s-old", fresh(claims={"iat": NOW - 26}), ProofProblem.TIME),
    ("iat-16s-ahead", fresh(claims={"iat": NOW + 16}), ProofProblem.TIME),
    ("no-ath", fresh(drop=("ath",)), ProofProblem.TOKEN_HASH),
    (
        "ath-of-another-token",
        fresh(claims={"ath": access_token_hash("other")}),
        ProofProblem.TOKEN_HASH,
    ),
]


@pytest.mark.parametrize(
    ("proof", "problem"), [p[1:] for p in PROBLEMS], ids=[p[0] for p in PROBLEMS]
)
def test_a_proof_that_fails_a_check_says_which(proof: str | None, problem: ProofProblem) -> None:
    assert verify(proof) is problem


def test_a_symmetric_or_unlisted_algorithm_is_refused() -> None:
    hs256 = jwt.encode(
        {"jti": "j", "htm": "GET", "htu": URL, "iat": NOW, "ath": token_hash(TOKEN)},
        "secret-secret-secret-secret-secret",
        algorithm="HS256",
        headers={"typ": "dpop+jwt", "jwk": KEY.public_jwk},
    )
    assert verify(hs256) is ProofProblem.ALGORITHM
    only_rsa = DpopRules(algorithms=frozenset({"PS256"}))
    assert verify(fresh(), rules=only_rsa) is ProofProblem.ALGORITHM


def test_the_window_edges_are_inside() -> None:
    assert isinstance(verify(fresh(claims={"iat": NOW - 25})), DpopProof)
    assert isinstance(verify(fresh(claims={"iat": NOW + 15})), DpopProof)
    narrow = DpopRules(max_age_s=5, future_skew_s=0)
    assert verify(fresh(claims={"iat": NOW - 6}), rules=narrow) is ProofProblem.TIME
    assert verify(fresh(claims={"iat": NOW + 1}), rules=narrow) is ProofProblem.TIME


def test_the_query_and_fragment_of_htu_are_ignored() -> None:
    assert isinstance(verify(fresh(claims={"htu": URL + "?page=2#top"})), DpopProof)


def test_a_request_whose_uri_cannot_be_rebuilt_fails_the_uri_check() -> None:
    assert verify(fresh(), uri=None) is ProofProblem.URI


def test_a_remembered_key_does_not_vouch_for_another_signature() -> None:
    verifier = ProofVerifier(RULES)
    expected = normalise_uri(URL)
    good = fresh()
    assert isinstance(verifier.verify(good, "GET", expected, TOKEN, NOW), DpopProof)
    # Same header text (so the parsed key is reused), signature of another key.
    assert verifier.verify(_other_signature(good), "GET", expected, TOKEN, NOW) is (
        ProofProblem.SIGNATURE
    )
    assert isinstance(verifier.verify(fresh(), "GET", expected, TOKEN, NOW), DpopProof)


@pytest.mark.parametrize(
    ("uri", "normal"),
    [
        ("https://api.example.com/a", "https://api.example.com/a"),
        ("HTTPS://API.Example.COM/a", "https://api.example.com/a"),
        ("https://api.example.com:443/a", "https://api.example.com/a"),
        ("http://api.example.com:80/a", "http://api.example.com/a"),
        ("http://api.example.com:8080/a", "http://api.example.com:8080/a"),
        ("https://api.example.com", "https://api.example.com/"),
        ("https://api.example.com/%7euser/%2f", "https://api.example.com/~user/%2F"),
        ("https://api.example.com/a/./b/../c", "https://api.example.com/a/c"),
        ("https://api.example.com/a?x=1#f", "https://api.example.com/a"),
        ("https://[::1]:8443/a", "https://[::1]:8443/a"),
        ("ftp://api.example.com/a", None),
        ("https://user@api.example.com/a", None),
        ("https://api.example.com:99999/a", None),
        ("https:///a", None),
    ],
)
def test_uris_compare_after_rfc_3986_normalisation(uri: str, normal: str | None) -> None:
    assert normalise_uri(uri) == normal


def test_the_request_uri_uses_the_external_scheme_when_configured() -> None:
    behind_a_tls_terminator = DpopRules(external_scheme="https")
    assert request_uri("http", "api.example.com", "/a?b", behind_a_tls_terminator) == (
        "https://api.example.com/a"
    )
    assert request_uri("http", "api.example.com", "/a?b", RULES) == "http://api.example.com/a"
    assert request_uri("", "api.example.com", "/a", RULES) is None
    assert request_uri("https", "", "/a", RULES) is None


def test_an_ec_key_on_another_curve_than_its_algorithm_is_refused() -> None:
    p384 = DpopKey("ES384", ec.generate_private_key(ec.SECP384R1()))
    assert verify(fresh(header={"jwk": p384.public_jwk})) is ProofProblem.KEY
