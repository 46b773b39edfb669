"""The schema registry: message formats as data.

JSON Schema documents (docs/SCHEMA-PROFILE.md) become msgspec types at run time
(``profile``), are identified by fingerprint (``schema``), evolve under compatibility rules
(``compat``), are signed by the coordinators (``records``) and looked up by name or
fingerprint (``book``). Everything here is pure; ``tfshare.registry_store`` keeps records on
disk.
"""
