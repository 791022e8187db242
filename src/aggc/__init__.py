"""AGGC reproduction harness."""
