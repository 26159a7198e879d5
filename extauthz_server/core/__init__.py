"""The pure decision: the request, its path and access token (and the DPoP proof or client
certificate a bound token needs), the caller's identity and roles, the route policy, the
decision and the upstream headers, and the authorizer that runs them in order.

No I/O and no clock reads (times are passed in). Imports nothing of this package but `errors`.
"""
