package extauthz.bench.allow_all

# The decision of the "OPA-Envoy, allow-all" row: every Check allowed, so the row measures
# the plugin's gRPC transport and a trivial evaluation.
default allow := true
