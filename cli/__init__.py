"""The ``autoslim`` command line: one small module per command (options -> settings -> one library call -> table)."""
