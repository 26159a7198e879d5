"""The peer rows of the benchmark: the OPA-Envoy plugin doing our `jwt` strategy's job in
Rego (authz.rego), beside our server with the same strategy. See bench/README.md."""
