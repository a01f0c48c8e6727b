"""Synthetic RSNA Screening Mammography data: CSVs and DICOMs that look like the real set."""
