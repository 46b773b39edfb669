"""File-based workflows the CLI calls, one function per command: keys, rosters, seal and open.

These read and write files and the state database; the pure core below them never does.
"""
