"""The key manager (``tfshare keys serve``): makes each epoch-mode channel's epoch keys and
delivers them to the channel's current readers (PROTOCOL.md 8.6).

Owns: ``plan`` (pure: which channels need a new epoch, and the key deliveries of one),
``store`` (its SQLite state: the epochs it made, each key sealed under the agency's state key,
who each was delivered to, and the deliveries not yet acknowledged by the broker) and
``service`` (the loop: follow the roster, re-key, publish, retry after an outage).
"""
