"""The provenance audit log: an append-only RFC 6962 Merkle tree and its signed checkpoints.

Pure (no network, no disk, no clock; time and randomness arrive as arguments):
``merkle`` (tree hashing and proofs), ``tree`` (the incremental log over stored perfect-subtree
hashes), ``note`` (C2SP signed notes and tlog checkpoints), ``entry`` (log entries),
``evidence`` (offline proof bundles), ``disclosure`` (one message proved by a recipient).

I/O: ``logstore`` (the log in SQLite) and ``service`` (the audit service on the broker).
"""
