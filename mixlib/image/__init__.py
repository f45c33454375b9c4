"""Images: colour histograms and lookups, palettes, image readers and writers, and the compress and sample jobs.
``image`` imports ``core`` and ``fit``, never ``recsys``."""
