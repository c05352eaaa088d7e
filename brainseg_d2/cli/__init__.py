"""The commands: one module per console script, each with ``build_parser()`` and ``main(argv)``.

A command parses its arguments and calls the library, which takes arguments, not
argv. Each filters third-party warnings before torch is imported.
"""
