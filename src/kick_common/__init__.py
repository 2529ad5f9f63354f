"""kick's bottom layer: cache paths, atomic file I/O, bundled-data readers and ``k=v`` / bool parsing.

Imports nothing of kick (and no torch), so every other kick package may use it.
"""
