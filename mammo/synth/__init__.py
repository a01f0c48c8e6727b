"""Synthetic RSNA Screening Mammography data: CSVs and DICOMs that look like the real set."""

# The lesion presets of mammo/synth/lesion.py, named here so that the CLI can offer them
# without importing numpy at start-up.
DIFFICULTY_NAMES = ("easy", "realistic")
