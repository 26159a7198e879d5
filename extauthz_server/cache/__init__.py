"""Identities remembered by token digest, never by token: the bounded LRU, L1 (this process)
and L2 (Redis), the entry format and its seal, single flight, DPoP proofs used once across
replicas, and the resolver that puts them in front of a strategy. Imports `identity`, `ops`,
`core` and `errors`.
"""
