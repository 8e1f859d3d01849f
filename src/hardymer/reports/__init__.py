"""Reports: result tables in the papers' layout, the published figures, plots, and the
hardness report."""
