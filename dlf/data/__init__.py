"""Data wing: MMSA feature pickles (``mmsa``), the synthetic stand-in (``synthetic``), file fingerprints."""
