"""The provenance audit log: an append-only RFC 6962 Merkle tree and its signed checkpoints.

Owns: the tree hashing and proofs (``merkle``), the incremental log over stored perfect-subtree
hashes (``tree``), and C2SP signed notes and tlog checkpoints (``note``). Everything here is pure:
no network, no disk, no clock; time and randomness arrive as arguments.
"""
