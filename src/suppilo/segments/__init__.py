"""Segments: filters compiled to SQL, counted and listed; the data the in-memory evaluator reads."""
