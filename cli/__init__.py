"""The tfshare command line (installed as ``tfshare.cli``): parse, call the library once, render."""
