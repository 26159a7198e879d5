"""The composition root and lifecycle: builds every part from the Config, runs and stops the
server and its worker processes, and the `check` and `demo` commands. The only room that
wires the others together; nothing but `cli` imports it.
"""
