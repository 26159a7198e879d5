"""One configuration model: YAML plus environment overrides, validated at start with errors
naming the key, and compiled once (routes, role map, providers). Each phase defines its own
settings types; this package alone reads them from files. Imports every room but `app`/`edges`.
"""
