"""Invalidations that cannot be lost: a log written with each change, and its delivery."""
