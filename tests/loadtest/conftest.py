"""Load-harness tests: every one talks to a real TCP server on 127.0.0.1 (a fake one, or ``python -m service``).

All carry the ``integration`` marker; the pure-maths ones run in milliseconds.
"""
