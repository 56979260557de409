"""The result gallery: one self-contained static HTML page per test run (``zsad report --html``, ``zsad test``)."""
