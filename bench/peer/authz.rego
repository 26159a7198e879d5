# The job extauthz-server's `jwt` strategy does on the benchmark's configuration, as a policy
# for the OPA-Envoy plugin (its decision: `result`). The benchmark writes
# data.extauthz_bench at run time from the configuration our server runs with
# (bench/peer/policy_data.py): issuer, audience, JWKS text, realm, role mapping, header names
# and routes. bench/peer/decisions.py checks that both decide alike before any timing.
package extauthz.bench.authz

settings := data.extauthz_bench

http_request := input.attributes.request.http

# --- The route: the first whose methods and path match (path without its query) -----------

path := split(http_request.path, "?")[0]

# Segment-aware like ours: /admin covers /admin and /admin/..., never /administrator.
path_matches(prefix) if {
	endswith(prefix, "/")
	startswith(path, prefix)
}

path_matches(prefix) if {
	not endswith(prefix, "/")
	path == prefix
}

path_matches(prefix) if {
	not endswith(prefix, "/")
	startswith(path, concat("", [prefix, "/"]))
}

route_matches(route) if {
	not route.methods
	path_matches(route.path_prefix)
}

route_matches(route) if {
	http_request.method in route.methods
	path_matches(route.path_prefix)
}

matching_routes := {index | some index, route in settings.routes; route_matches(route)}

route := settings.routes[min(matching_routes)] if count(matching_routes) > 0

# --- The bearer token (RFC 6750 §2.1), read as ours reads it ------------------------------

authorization := trim(http_request.headers.authorization, " \t")

space := indexof(authorization, " ")

scheme := substring(authorization, 0, space) if {
	space >= 0
} else := authorization

credentials := trim(substring(authorization, space + 1, -1), " ") if {
	space >= 0
} else := ""

bearer := credentials if {
	lower(scheme) == "bearer"
	count(credentials) <= 8192
	regex.match(`^[A-Za-z0-9\-._~+/]+=*$`, credentials)
}

# Another scheme (Basic, Digest) is no bearer token at all; a bearer token of the wrong shape,
# or several Authorization headers joined by commas, is malformed.
token_problem := "missing" if {
	not authorization
} else := "missing" if {
	authorization == ""
} else := "malformed" if {
	lower(scheme) == "bearer"
	not bearer
} else := "missing" if {
	lower(scheme) != "bearer"
	regex.match(`^[A-Za-z0-9]+$`, scheme)
	not regex.match(`(?i),\s*bearer(\s|$)`, authorization)
} else := "malformed" if {
	lower(scheme) != "bearer"
}

# --- Who the caller is: a genuine, current access token of the issuer -----------------------

# Signature against the JWKS, `iss`, `aud`, and `exp`/`nbf` against the time of the query.
verification := io.jwt.decode_verify(
	bearer,
	{"cert": settings.jwks, "iss": settings.issuer, "aud": settings.audience},
)

claims := verification[2] if verification[0]

non_empty_string(value) if {
	is_string(value)
	value != ""
}

token_type_accepted if not claims.typ

token_type_accepted if {
	is_string(claims.typ)
	lower(claims.typ) == "bearer"
}

# Ours also counts a token as expired 2 s before its `exp` (EXPIRY_SKEW_SECONDS), and wants
# the subject named: a token without `sub` does not say who the user is.
identity_valid if {
	is_number(claims.exp)
	claims.exp - 2 > time.now_ns() / 1000000000
	non_empty_string(claims.sub)
	token_type_accepted
}

# --- Roles: the realm's and our client's, through the role mapping --------------------------

provider_roles contains role if {
	some role in claims.realm_access.roles
	is_string(role)
}

provider_roles contains role if {
	some role in claims.resource_access[settings.client_id].roles
	is_string(role)
}

roles contains role if {
	some provider_role in provider_roles
	some role in settings.role_mapping[provider_role]
}

permitted if count(object.get(route, "any_of", [])) == 0

permitted if {
	some role in route.any_of
	role in roles
}

# --- Identity headers: set what is known, remove every other configured one -----------------

username := claims.preferred_username if {
	non_empty_string(claims.preferred_username)
} else := claims.username if {
	non_empty_string(claims.username)
}

client := claims.client_id if {
	non_empty_string(claims.client_id)
} else := claims.azp if {
	non_empty_string(claims.azp)
}

identity_values[settings.headers.subject] := claims.sub

identity_values[settings.headers.username] := username

identity_values[settings.headers.email] := claims.email if non_empty_string(claims.email)

identity_values[settings.headers.roles] := concat(",", sort(roles)) if count(roles) > 0

identity_values[settings.headers.client] := client

# A value with control characters is dropped rather than sent.
identity_headers[name] := value if {
	identity_valid
	some name, value in identity_values
	not regex.match(`[\x00-\x08\x0a-\x1f\x7f]`, value)
}

headers_to_remove := [name |
	some name in settings.headers
	not identity_headers[name]
]

allow := {
	"allowed": true,
	"headers": identity_headers,
	"request_headers_to_remove": headers_to_remove,
}

# --- Denials: our statuses, challenges and bodies ---------------------------------------------

challenge(error, description) := sprintf(
	`Bearer realm="%s", error="%s", error_description="%s"`,
	[settings.realm, error, description],
)

deny(status, error, description, extra_headers) := {
	"allowed": false,
	"http_status": status,
	"headers": object.union({"content-type": "application/json"}, extra_headers),
	"body": json.marshal({"error": error, "error_description": description}),
}

no_route := deny(403, "access_denied", "No route permits this request", {})

missing_token := deny(
	401, "unauthorized", "A bearer token is required",
	{"www-authenticate": sprintf(`Bearer realm="%s"`, [settings.realm])},
)

malformed_token := deny(
	401, "invalid_request", "The Authorization header is malformed",
	{"www-authenticate": challenge("invalid_request", "The Authorization header is malformed")},
)

invalid_token := deny(
	401, "invalid_token", "The access token is invalid or expired",
	{"www-authenticate": challenge("invalid_token", "The access token is invalid or expired")},
)

insufficient_role := deny(
	403, "insufficient_scope", "The caller lacks a required role or scope",
	{"www-authenticate": challenge("insufficient_scope", "The caller lacks a required role or scope")},
)

# --- The decision ---------------------------------------------------------------------------

result := no_route if {
	not route
} else := allow if {
	route.public
} else := missing_token if {
	token_problem == "missing"
} else := malformed_token if {
	token_problem == "malformed"
} else := invalid_token if {
	not identity_valid
} else := allow if {
	permitted
} else := insufficient_role
