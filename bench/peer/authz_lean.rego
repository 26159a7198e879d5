# The same job as authz.rego, written for speed as an OPA user would: routes matched with one
# startswith each (prefixes prepared in the data), the bearer token taken without checking
# its syntax (decode_verify refuses anything that is not a signed JWT), header values set
# without filtering control characters. It decides the benchmark's cases as authz.rego and
# our server do (bench/peer/decisions.py checks it before any timing); it is here to show
# how much of the peer's cost is the policy's own.
package extauthz.bench.lean

settings := data.extauthz_bench

http_request := input.attributes.request.http

path_slash := concat("", [split(http_request.path, "?")[0], "/"])

matching := {index |
	some index, candidate in settings.routes
	startswith(path_slash, candidate.match_prefix)
	object.get(candidate.method_allowed, http_request.method, candidate.any_method)
}

route := settings.routes[min(matching)] if count(matching) > 0

authorization := object.get(http_request.headers, "authorization", "")

bearer := substring(authorization, 7, -1) if startswith(authorization, "Bearer ")

verification := io.jwt.decode_verify(
	bearer,
	{"cert": settings.jwks, "iss": settings.issuer, "aud": settings.audience},
)

claims := verification[2] if verification[0]

identity_valid if {
	claims.exp - 2 > time.now_ns() / 1000000000
	claims.sub != ""
	lower(object.get(claims, "typ", "bearer")) == "bearer"
}

roles contains role if {
	some provider_role in claims.realm_access.roles
	some role in settings.role_mapping[provider_role]
}

roles contains role if {
	some provider_role in claims.resource_access[settings.client_id].roles
	some role in settings.role_mapping[provider_role]
}

permitted if count(route.any_of) == 0

permitted if {
	some role in route.any_of
	role in roles
}

names := settings.headers

identity_headers := {name: value |
	some field, value in {
		"subject": claims.sub,
		"username": object.get(claims, "preferred_username", ""),
		"email": object.get(claims, "email", ""),
		"roles": concat(",", sort(roles)),
		"client": object.get(claims, "azp", ""),
	}
	value != ""
	name := names[field]
}

allow := {
	"allowed": true,
	"headers": identity_headers,
	"request_headers_to_remove": [name | some name in names; not identity_headers[name]],
}

anonymous := {"allowed": true, "headers": {}, "request_headers_to_remove": [name | some name in names]}

deny(status, error, description, challenge) := {
	"allowed": false,
	"http_status": status,
	"headers": {"content-type": "application/json", "www-authenticate": challenge},
	"body": json.marshal({"error": error, "error_description": description}),
}

challenge(error, description) := sprintf(
	`Bearer realm="%s", error="%s", error_description="%s"`,
	[settings.realm, error, description],
)

result := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "access_denied", "error_description": "No route permits this request"}),
} if {
	not route
} else := anonymous if {
	route.public
} else := deny(
	401, "unauthorized", "A bearer token is required",
	sprintf(`Bearer realm="%s"`, [settings.realm]),
) if {
	not bearer
} else := deny(
	401, "invalid_token", "The access token is invalid or expired",
	challenge("invalid_token", "The access token is invalid or expired"),
) if {
	not identity_valid
} else := allow if {
	permitted
} else := deny(
	403, "insufficient_scope", "The caller lacks a required role or scope",
	challenge("insufficient_scope", "The caller lacks a required role or scope"),
)
