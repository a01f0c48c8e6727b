"""Promotion protocols shipped with mammo (YAML); see :mod:`mammo.protocol`."""
