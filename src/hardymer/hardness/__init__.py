"""Two-view hardness of HARDY-MER: the teacher, the estimators and the curriculum plans."""
