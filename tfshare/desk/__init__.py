"""The agency's desk: the running agent serves the CLI and the web inbox on this machine.

Owns nothing itself; see ``api`` (the wire format of the local API), ``service`` (what the
desk does, in the agent's process), ``server`` (the Unix socket), ``client`` (the CLI side).
"""
