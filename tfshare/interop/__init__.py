"""STIX 2.1 and MISP, out and in (issue 16): what analysts' platforms take in.

Owns nothing itself; its modules each own one direction. The library is pure (a received
message's builtins form in, a bundle or an event out; a bundle or an event in, a draft body
out); ``cli/interop_cmd.py`` reads the inbox and writes files. Nothing else in tfshare
imports this package: stix2, stix2-validator and PyMISP load only for these commands.
"""
