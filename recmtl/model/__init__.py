"""Encoders: matrix factorisation (``mf``)."""
