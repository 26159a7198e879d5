"""Try extauthz-server on one machine: a dev identity provider, the server, an echo upstream
and a real Envoy on loopback (`run.run_demo`)."""
