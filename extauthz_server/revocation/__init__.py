"""Back-channel logout: the logout token's verification and the endpoint that turns a
verified logout into cache invalidations. Imports `cache`, `identity`, `ops`, `core` and
`errors`; not `metadata`.
"""
